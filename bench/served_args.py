"""The server a serving benchmark starts: the knobs bench_serving and soak share, as server flags."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServedArgs:
    """The served model and the server's batch, queue and threads (serving's flags of the same names)."""

    model: str = field(default="default", metadata={"help": "'default' (embedded SmolLM2) or a local path"})
    policy: str = field(default="checkpoints/router", metadata={"help": "learned router checkpoint"})
    max_prompt_tokens: int = field(default=96, metadata={"help": "prompts are cut to about this many tokens"})
    max_num_seqs: int = field(default=8, metadata={"help": "server --max-num-seqs", "aliases": ["--max-batch"]})
    max_queue: int = field(default=64, metadata={"help": "server --max-queue"})
    num_threads: int = field(default=1, metadata={
        "help": "server torch threads; 1 avoids oversubscription on a shared 2-core machine (0 = torch's default)"})

    def server_flags(self) -> list[str]:
        """The server's command-line flags for these knobs (quiet logs)."""
        return ["--model", self.model, "--policy", self.policy, "--max-num-seqs", str(self.max_num_seqs),
                "--max-queue", str(self.max_queue), "--num-threads", str(self.num_threads), "--log-level", "warning"]
