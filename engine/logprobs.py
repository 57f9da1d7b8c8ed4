"""Log-probabilities of committed tokens under the target's own model, for requests that ask.

They are read from the logits the target computed while it verified the step (one row per
committed token), so under speculation they are those plain decoding reports for the same
tokens: bit for bit where the target's forward is batch-invariant (the default invariant
attention on a row-invariant path, engine/precision.py), else up to float rounding. As vLLM does, they are of the raw model distribution: log_softmax of the logits before
temperature, top-k and top-p, whatever the request samples with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_LOGPROBS = 20           # most alternatives per token (OpenAI's top_logprobs bound)


@dataclass(frozen=True)
class TokenLogprob:
    """One committed token: its log-probability and the `num_top` most likely tokens, most likely first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def token_logprobs(logits: torch.Tensor, token_ids: list[int], num_top: int) -> list[TokenLogprob]:
    """[n, vocab] target logits at the positions that chose `token_ids` (n of them) -> their logprobs."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)                                      # [n, vocab]
    index = torch.tensor(token_ids, dtype=torch.long, device=logits.device)[:, None]          # [n, 1]
    chosen = logprobs.gather(-1, index)[:, 0].tolist()                                        # [n]
    if not num_top:
        return [TokenLogprob(t, lp) for t, lp in zip(token_ids, chosen)]
    values, ids = logprobs.topk(min(num_top, logprobs.shape[-1]), dim=-1)                    # [n, num_top], sorted
    return [TokenLogprob(t, lp, tuple(zip(row_ids, row_values)))
            for t, lp, row_ids, row_values in zip(token_ids, chosen, ids.tolist(), values.tolist())]
