"""Verification of a proposal by the next level of a chain: greedy match or rejection sampling.

Terms (as in vLLM's rejection sampler): for a proposal of m tokens, the verifier computes m + 1
distributions. *Accepted* tokens are the longest prefix that passes; at the first rejection a
*recovered* token is drawn from the residual norm(max(0, p - q)); if all m pass, a *bonus* token
is drawn from the last distribution. So a level always outputs accepted + 1 tokens, and, by the
speculative sampling theorem (Leviathan et al., arXiv 2211.17192; Chen et al., arXiv
2302.01318), each of them is distributed exactly as the verifier's own model.
"""

from __future__ import annotations

import torch

PLACEHOLDER_TOKEN_ID = -1


def verify_greedy(logits: torch.Tensor, proposals: torch.Tensor, num_proposed: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept while the proposal equals the verifier's argmax.

    Args:
        logits: [batch, k_max + 1, vocab] verifier logits at the last token and each proposal.
        proposals: [batch, k_max] proposed tokens, padded with PLACEHOLDER_TOKEN_ID.
        num_proposed: [batch] number of real proposals per row.
    Returns:
        output: [batch, k_max + 1] accepted tokens then the correction/bonus, padded.
        num_accepted: [batch].
    """
    k_max = proposals.shape[1]
    target = logits[:, : k_max + 1].argmax(dim=-1)                             # [batch, k_max + 1]
    in_range = torch.arange(k_max)[None, :] < num_proposed[:, None]              # [batch, k_max]
    matches = (target[:, :k_max] == proposals) & in_range
    num_accepted = matches.int().cumprod(dim=1).sum(dim=1)                       # [batch]
    positions = torch.arange(k_max + 1)[None, :]
    output = target.masked_fill(positions > num_accepted[:, None], PLACEHOLDER_TOKEN_ID)
    return output, num_accepted


def verify_sampling(target_probs: torch.Tensor, proposal: list[int], draft_probs: torch.Tensor | None,
                    generator: torch.Generator) -> tuple[int, list[int]]:
    """Rejection sampling for one row.

    Args:
        target_probs: [m + 1, vocab] the verifier's distributions.
        proposal: the m proposed tokens.
        draft_probs: [m, vocab] the distributions they were drawn from; None for a deterministic
            drafter (one-hot q, so x is accepted with probability p(x)).
    Returns:
        (num_accepted, tokens) with len(tokens) == num_accepted + 1.
    """
    m = len(proposal)
    if m:
        index = torch.arange(m)
        tokens_t = torch.as_tensor(proposal)
        p = target_probs[index, tokens_t]
        q = draft_probs[index, tokens_t] if draft_probs is not None else torch.ones(m)
        ratio = torch.where(q > 0, p / q, torch.zeros_like(p)).clamp(max=1.0)
        coins = torch.rand(m, generator=generator)
        rejected = (coins >= ratio).nonzero()
        accepted = int(rejected[0]) if rejected.numel() else m
    else:
        accepted = 0
    if accepted < m:
        residual = target_probs[accepted].clone()
        if draft_probs is not None:
            residual = (residual - draft_probs[accepted]).clamp(min=0)
        else:
            residual[proposal[accepted]] = 0.0
        total = residual.sum()
        if total <= 0:          # p == q: a rejection has probability 0, guard rounding
            residual = target_probs[accepted]
            total = residual.sum()
        extra = int(torch.multinomial(residual / total, 1, generator=generator))
    else:
        extra = int(torch.multinomial(target_probs[m], 1, generator=generator))
    return accepted, list(proposal[:accepted]) + [extra]
