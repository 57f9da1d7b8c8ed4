"""The servers `bench.reliability` runs against: tiny random models built on the spot, served by
`python -m serving` as a child process."""

from __future__ import annotations

from pathlib import Path

from cli.results import RESULTS_DIR
from serving.server_process import ServerProcess


def tiny_model_dir(directory: Path, hidden_size: int, num_layers: int) -> Path:
    from tests.tiny_models import build_char_tokenizer, build_tiny_llama
    build_tiny_llama(hidden_size=hidden_size, num_layers=num_layers, num_heads=4, num_kv_heads=2,
                     max_position=1024).save_pretrained(directory)
    build_char_tokenizer().save_pretrained(directory)
    return directory


def start_server(model: str, flags: list[str], name: str) -> ServerProcess:
    """`python -m serving` on `model` with the n-gram chain and no policy, logging to bench/results/logs/<name>.log."""
    server = ServerProcess(["--model", model, "--policy", "", "--draft", "", "--router", "ngram>target@4",
                            "--profile-budget-s", "1", "--decision-log", "", "--log-level", "info",
                            "--per-request-spec-metrics", "summary", "--drain-timeout-s", "60", *flags],
                           RESULTS_DIR / "logs" / f"{name}.log", ready_timeout_s=600)
    return server.start()


def forward_path(log_path: Path) -> str:
    """The path the server logged it chose ('forward path: float32-prepacked on cpu ...')."""
    lines = [line for line in log_path.read_text().splitlines() if "forward path:" in line]
    return lines[0].split("forward path:", 1)[1].strip() if lines else "unknown"
