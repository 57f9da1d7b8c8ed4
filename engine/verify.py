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

from engine.sampling import sample_from

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
    in_range = torch.arange(k_max, device=logits.device)[None, :] < num_proposed[:, None]   # [batch, k_max]
    matches = (target[:, :k_max] == proposals) & in_range
    num_accepted = matches.int().cumprod(dim=1).sum(dim=1)                       # [batch]
    positions = torch.arange(k_max + 1, device=logits.device)[None, :]
    output = target.masked_fill(positions > num_accepted[:, None], PLACEHOLDER_TOKEN_ID)
    return output, num_accepted


def verify_sampling(target_probs: torch.Tensor, proposals: torch.Tensor, num_proposed: torch.Tensor,
                    draft_probs: torch.Tensor, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rejection sampling for a batch: accept x with probability min(1, p(x) / q(x)); at the
    first rejection draw the recovered token from norm(max(0, p - q)), else the bonus from p.

    Args:
        target_probs: [batch, k_max + 1, vocab] the verifier's distributions.
        proposals: [batch, k_max] proposed tokens, padded with PLACEHOLDER_TOKEN_ID.
        num_proposed: [batch] number of real proposals per row.
        draft_probs: [batch, k_max, vocab] the distributions the proposals were drawn from; a
            deterministic drafter's rows are one-hot (x is then accepted with probability p(x)).
        uniforms: [batch, k_max + 1] in [0, 1): a row's coins in the columns before
            num_proposed; column num_proposed draws the recovered or bonus token.
    Returns:
        output: [batch, k_max + 1] accepted tokens then the recovered/bonus token, padded.
        num_accepted: [batch].
    """
    batch, k_max = proposals.shape
    device = target_probs.device
    rows = torch.arange(batch, device=device)
    positions = torch.arange(k_max, device=device)[None, :]
    index = proposals.clamp(min=0)[..., None]                                     # [batch, k_max, 1]
    p = target_probs[:, :k_max].gather(-1, index)[..., 0]                         # [batch, k_max]
    q = draft_probs.gather(-1, index)[..., 0]                                     # [batch, k_max]
    ratio = torch.where(q > 0, p / q, torch.zeros_like(p)).clamp(max=1.0)
    accepted = (uniforms[:, :k_max] < ratio) & (positions < num_proposed[:, None])
    num_accepted = accepted.int().cumprod(dim=1).sum(dim=1)                      # [batch]
    p_next = target_probs[rows, num_accepted]                                     # [batch, vocab]
    q_next = torch.cat([draft_probs, draft_probs.new_zeros(batch, 1, draft_probs.shape[-1])], 1)[rows, num_accepted]
    rejected = (num_accepted < num_proposed)[:, None]
    residual = torch.where(rejected, (p_next - q_next).clamp(min=0), p_next)     # [batch, vocab]
    empty = residual.sum(dim=-1, keepdim=True) <= 0      # p == q: a rejection had probability 0
    residual = torch.where(empty, p_next, residual)
    extra = sample_from(residual, uniforms[rows, num_proposed])                   # [batch]
    output = proposals.masked_fill(positions >= num_accepted[:, None], PLACEHOLDER_TOKEN_ID)
    output = torch.cat([output, torch.full((batch, 1), PLACEHOLDER_TOKEN_ID, dtype=output.dtype, device=device)], 1)
    output[rows, num_accepted] = extra                                            # [batch, k_max + 1]
    return output, num_accepted
