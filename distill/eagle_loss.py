"""EAGLE's objective: smooth-L1 on the predicted (normed) features plus the sparse KL to the target's next token.

A training sequence (tokens x_0..x_{n-1}, the target's features f_0..f_{n-1} and its top-k law
at every position) gives n - 2 inputs: the pair (x_{p+1}, f_p) for p = 0..n-3, whose targets
are f_{p+1} (features) and the target's law of x_{p+2} (the sparse KL of distill/loss.py).
Training is teacher-forced on the target's features; EAGLE adds uniform noise to the input
features so that the head tolerates its own, slightly wrong, features while it drafts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill.data import TeacherSequence
from distill.loss import index_in_head_of, position_kl, stats_of
from engine.eagle_head import predict_features


@dataclass
class FeatureSequence(TeacherSequence):
    """A TeacherSequence with the target's final hidden state at every position."""

    features: torch.Tensor = None        # [n, hidden] bfloat16 (before the final norm)


def _inputs(group: list[FeatureSequence]):
    """Padded pair inputs, feature targets and a validity mask: [b, m] ids, [b, m, h] x2, [b, m]."""
    width = max(len(s.token_ids) - 2 for s in group)
    hidden = group[0].features.shape[-1]
    ids = torch.zeros(len(group), width, dtype=torch.long)
    feats = torch.zeros(len(group), width, hidden)
    targets = torch.zeros(len(group), width, hidden)
    mask = torch.zeros(len(group), width, dtype=torch.long)
    for row, seq in enumerate(group):
        m = len(seq.token_ids) - 2
        ids[row, :m] = seq.token_ids[1: m + 1]
        feats[row, :m] = seq.features[:m].float()
        targets[row, :m] = seq.features[1: m + 1].float()
        mask[row, :m] = 1
    return ids, feats, targets, mask


def eagle_loss(head, group: list[FeatureSequence], prompt_weight: float = 1.0, with_stats: bool = True,
               feature_weight: float = 1.0, feature_noise: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Weighted mean of KL + feature_weight * smooth-L1 over the batch's positions, and stats.

    Reply positions weigh 1, prompt positions `prompt_weight`. In training mode the input
    features get uniform noise of `feature_noise` times each position's RMS.
    """
    group = [s for s in group if len(s.token_ids) > 2]
    ids, feats, targets, mask = _inputs(group)
    if head.training and feature_noise > 0:
        rms = feats.pow(2).mean(-1, keepdim=True).sqrt()
        feats = feats + (torch.rand_like(feats) * 2 - 1) * feature_noise * rms
    predicted, logits = predict_features(head, ids, feats, mask)                # [b, m, h], [b, m, v]
    valid = mask.bool()
    logits, predicted, targets = logits[valid], predicted[valid], targets[valid]  # [n, v], [n, h], [n, h]
    teacher_ids = torch.cat([s.topk_ids[1: len(s.token_ids) - 1] for s in group])
    teacher_probs = torch.cat([s.topk_probs[1: len(s.token_ids) - 1] for s in group])
    kl = position_kl(logits, teacher_ids, teacher_probs, index_in_head_of(head.lm_head))
    norm = head.model.norm                                  # the target's final norm: outliers weigh as on the head
    feature_loss = F.smooth_l1_loss(norm(predicted), norm(targets), reduction="none").mean(-1)      # [n]
    reply = torch.cat([torch.arange(1, len(s.token_ids) - 1) >= s.reply_start for s in group])
    weights = torch.where(reply, 1.0, prompt_weight)
    loss = ((kl + feature_weight * feature_loss) * weights).sum() / weights.sum().clamp(min=1e-9)
    if not with_stats:
        return loss, {}
    stats = stats_of(kl, logits, teacher_ids, reply, getattr(head.lm_head, "vocab_subset", None))
    return loss, dict(stats, feature_sum=float(feature_loss.detach().sum()))
