"""The distillation objective: KL from the target's sparse (top-k) next-token law to the draft's.

The target keeps only its top-k probabilities, so the KL is taken over the partition {each kept
token the draft can emit} + {everything else as one bucket}: a proper KL between two coarsened
distributions and a lower bound on the full one. Kept tokens outside a reduced draft vocabulary
fall into the bucket (the draft's probability for them is 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _head(draft) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows of the LM head the draft scores, and their token ids (None: all)."""
    subset = getattr(draft.lm_head, "vocab_subset", None)
    weight = draft.lm_head.weight
    return (weight if subset is None else weight[subset]), subset


def _pad(group: list) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s.token_ids) for s in group)
    ids = torch.zeros(len(group), width, dtype=torch.long)
    mask = torch.zeros(len(group), width, dtype=torch.long)
    for row, seq in enumerate(group):
        ids[row, : len(seq.token_ids)] = seq.token_ids
        mask[row, : len(seq.token_ids)] = 1
    return ids, mask


def position_kl(log_q: torch.Tensor, teacher_ids: torch.Tensor, teacher_probs: torch.Tensor,
                index_in_head: torch.Tensor | None) -> torch.Tensor:
    """KL(p || q) per position over {kept tokens} + {rest}.

    Args:
        log_q: [n, v] draft log-probabilities over its head's tokens.
        teacher_ids: [n, k] kept token ids; teacher_probs: [n, k] their target probabilities.
        index_in_head: [vocab] column of each token in log_q (-1: not scored), None when v = vocab.
    Returns: [n] KL values (>= 0 up to rounding).
    """
    n, v = log_q.shape
    ids = teacher_ids.long()
    if index_in_head is None:
        columns, in_head = ids, torch.ones_like(ids, dtype=torch.bool)
    else:
        columns = index_in_head[ids]
        in_head = columns >= 0
    p = teacher_probs.float() * in_head
    p = p / p.sum(-1, keepdim=True).clamp(min=1.0)                 # fp16 sums may pass 1
    safe_columns = torch.where(in_head, columns, v)                 # absent tokens -> dummy column v
    log_q_kept = torch.cat([log_q, log_q.new_zeros(n, 1)], 1).gather(1, safe_columns)
    kept = (torch.xlogy(p, p) - p * log_q_kept).sum(-1)             # [n]
    mask = torch.zeros(n, v + 1, dtype=torch.bool).scatter_(1, safe_columns, True)[:, :v]
    log_q_rest = log_q.masked_fill(mask, float("-inf")).logsumexp(-1).clamp(min=-100.0)
    p_rest = 1 - p.sum(-1)
    p_rest = torch.where(p_rest > 1e-4, p_rest, torch.zeros_like(p_rest))    # fp16 rounding is not mass
    rest = torch.xlogy(p_rest, p_rest) - torch.where(p_rest > 0, p_rest * log_q_rest, torch.zeros_like(p_rest))
    return kept + rest


def _forward(draft, group: list):
    """Draft log-probs at every position that has a target, with the matching targets."""
    ids, mask = _pad(group)
    hidden = draft.model(input_ids=ids, attention_mask=mask).last_hidden_state      # [b, t, h]
    rows = [seq.num_positions for seq in group]
    hidden = torch.cat([hidden[r, :n] for r, n in enumerate(rows)])                  # [n, h]
    weight, subset = _head(draft)
    log_q = F.log_softmax(F.linear(hidden, weight), dim=-1)                          # [n, v]
    teacher_ids = torch.cat([seq.topk_ids for seq in group])
    teacher_probs = torch.cat([seq.topk_probs for seq in group])
    index_in_head = None
    if subset is not None:
        index_in_head = torch.full((draft.lm_head.weight.shape[0],), -1, dtype=torch.long)
        index_in_head[subset] = torch.arange(len(subset))
    reply = torch.cat([torch.arange(n) >= seq.reply_start for n, seq in zip(rows, group)])
    predicted = log_q.argmax(-1) if subset is None else subset[log_q.argmax(-1)]
    return log_q, teacher_ids, teacher_probs, index_in_head, reply, predicted


def sparse_kl(draft, group: list) -> tuple[torch.Tensor, dict]:
    """Mean KL over every position of a batch of TeacherSequences (differentiable), and stats."""
    log_q, teacher_ids, teacher_probs, index_in_head, reply, predicted = _forward(draft, group)
    kl = position_kl(log_q, teacher_ids, teacher_probs, index_in_head)
    agree = predicted == teacher_ids[:, 0].long()
    detached = kl.detach()
    return kl.mean(), dict(kl_sum=float(detached.sum()), kl_reply_sum=float(detached[reply].sum()),
                           num=len(kl), num_reply=int(reply.sum()),
                           agree=int(agree.sum()), agree_reply=int(agree[reply].sum()))


@torch.no_grad()
def evaluate(draft, sequences: list, batch_size: int = 8) -> dict:
    """Held-out KL and top-1 agreement with the target, over all positions and reply positions."""
    was_training = draft.training
    draft.eval()
    total = dict(kl_sum=0.0, kl_reply_sum=0.0, num=0, num_reply=0, agree=0, agree_reply=0)
    ordered = sorted(sequences, key=lambda s: len(s.token_ids))
    for start in range(0, len(ordered), batch_size):
        _, stats = sparse_kl(draft, ordered[start: start + batch_size])
        for key in total:
            total[key] += stats[key]
    draft.train(was_training)
    num, num_reply = max(total["num"], 1), max(total["num_reply"], 1)
    return dict(kl=round(total["kl_sum"] / num, 4), kl_reply=round(total["kl_reply_sum"] / num_reply, 4),
                top1=round(total["agree"] / num, 4), top1_reply=round(total["agree_reply"] / num_reply, 4))
