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
    head = draft.lm_head
    subset = getattr(head, "vocab_subset", None)
    return (head.weight if subset is None else head.subset_weight()), subset


def _pad(group: list) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s.token_ids) for s in group)
    ids = torch.zeros(len(group), width, dtype=torch.long)
    mask = torch.zeros(len(group), width, dtype=torch.long)
    for row, seq in enumerate(group):
        ids[row, : len(seq.token_ids)] = seq.token_ids
        mask[row, : len(seq.token_ids)] = 1
    return ids, mask


def position_kl(logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_probs: torch.Tensor,
                index_in_head: torch.Tensor | None) -> torch.Tensor:
    """KL(p || q) per position over {kept tokens} + {rest}, q = softmax(logits).

    Args:
        logits: [n, v] draft logits over its head's tokens.
        teacher_ids: [n, k] kept token ids; teacher_probs: [n, k] their target probabilities.
        index_in_head: [vocab] column of each token in logits (-1: not scored), None when v = vocab.
    Returns: [n] KL values (>= 0 up to rounding).
    """
    ids = teacher_ids.long()
    if index_in_head is None:
        columns, in_head = ids, torch.ones_like(ids, dtype=torch.bool)
    else:
        columns = index_in_head[ids]
        in_head = columns >= 0
    p = teacher_probs.float() * in_head
    p = p / p.sum(-1, keepdim=True).clamp(min=1.0)                  # fp16 sums may pass 1
    log_z = logits.logsumexp(-1, keepdim=True)                        # [n, 1]
    log_q_kept = logits.gather(1, columns.clamp(min=0)) - log_z      # [n, k]; absent tokens have p = 0
    kept = (torch.xlogy(p, p) - p * log_q_kept).sum(-1)              # [n]
    q_kept = (log_q_kept.exp() * in_head).sum(-1)
    log_q_rest = torch.log1p(-q_kept.clamp(max=1 - 1e-6))            # the draft's mass on everything else
    p_rest = 1 - p.sum(-1)
    p_rest = torch.where(p_rest > 1e-4, p_rest, torch.zeros_like(p_rest))    # fp16 rounding is not mass
    rest = torch.xlogy(p_rest, p_rest) - p_rest * log_q_rest
    return kept + rest


def _forward(draft, group: list):
    """Draft logits at every position that has a target, with the matching targets."""
    ids, mask = _pad(group)
    hidden = draft.model(input_ids=ids, attention_mask=mask).last_hidden_state      # [b, t, h]
    rows = [seq.num_positions for seq in group]
    hidden = torch.cat([hidden[r, :n] for r, n in enumerate(rows)])                  # [n, h]
    weight, subset = _head(draft)
    logits = F.linear(hidden, weight)                                                # [n, v]
    teacher_ids = torch.cat([seq.topk_ids for seq in group])
    teacher_probs = torch.cat([seq.topk_probs for seq in group])
    index_in_head = index_in_head_of(draft.lm_head)
    reply = torch.cat([torch.arange(n) >= seq.reply_start for n, seq in zip(rows, group)])
    return logits, teacher_ids, teacher_probs, index_in_head, reply, subset


def sparse_kl(draft, group: list, prompt_weight: float = 1.0, with_stats: bool = True) -> tuple[torch.Tensor, dict]:
    """Weighted mean KL over the positions of a batch of TeacherSequences (differentiable), and stats.

    Reply positions (what a draft predicts when serving) weigh 1, prompt positions `prompt_weight`.
    """
    logits, teacher_ids, teacher_probs, index_in_head, reply, subset = _forward(draft, group)
    kl = position_kl(logits, teacher_ids, teacher_probs, index_in_head)
    weights = torch.where(reply, 1.0, prompt_weight)
    loss = (kl * weights).sum() / weights.sum().clamp(min=1e-9)
    if not with_stats:
        return loss, {}
    return loss, stats_of(kl, logits, teacher_ids, reply, subset)


def stats_of(kl: torch.Tensor, logits: torch.Tensor, teacher_ids: torch.Tensor, reply: torch.Tensor,
             subset: torch.Tensor | None) -> dict:
    """Sums behind `evaluate`'s metrics: KL and top-1 agreement, over all and reply positions."""
    detached = kl.detach()
    predicted = logits.detach().argmax(-1)
    if subset is not None:
        predicted = subset[predicted]
    agree = predicted == teacher_ids[:, 0].long()
    return dict(kl_sum=float(detached.sum()), kl_reply_sum=float(detached[reply].sum()),
                num=len(kl), num_reply=int(reply.sum()),
                agree=int(agree.sum()), agree_reply=int(agree[reply].sum()))


def index_in_head_of(lm_head) -> torch.Tensor | None:
    """[vocab] column of each token in a subset head's logits (-1: not scored); None for a full head."""
    subset = getattr(lm_head, "vocab_subset", None)
    if subset is None:
        return None
    index = torch.full((lm_head.weight.shape[0],), -1, dtype=torch.long)
    index[subset] = torch.arange(len(subset))
    return index


@torch.no_grad()
def evaluate(draft, sequences: list, batch_size: int = 8, loss_fn=None) -> dict:
    """Held-out KL and top-1 agreement with the target, over all positions and reply positions,
    of `loss_fn`'s stats (default sparse_kl); any other `<name>_sum` stat is reported per position."""
    loss_fn = loss_fn or sparse_kl
    was_training = draft.training
    draft.eval()
    total: dict[str, float] = {}
    ordered = sorted(sequences, key=lambda s: len(s.token_ids))
    for start in range(0, len(ordered), batch_size):
        _, stats = loss_fn(draft, ordered[start: start + batch_size])
        for key, value in stats.items():
            total[key] = total.get(key, 0) + value
    draft.train(was_training)
    num, num_reply = max(total["num"], 1), max(total["num_reply"], 1)
    extra = {key[:-4]: round(value / num, 4) for key, value in total.items()
             if key.endswith("_sum") and key not in ("kl_sum", "kl_reply_sum")}
    return dict(kl=round(total["kl_sum"] / num, 4), kl_reply=round(total["kl_reply_sum"] / num_reply, 4),
                top1=round(total["agree"] / num, 4), top1_reply=round(total["agree_reply"] / num_reply, 4), **extra)
