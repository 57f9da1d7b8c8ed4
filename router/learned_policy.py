"""The learned router on the serving path: numpy forward over exported weights, no pickle, no SB3.

`LearnedPolicy.load(path)` checks a checkpoint in this order, each failure a typed error the
server catches (all subclass `CheckpointError`):

    missing manifest or weights    -> CheckpointMissing
    unreadable / truncated files   -> CheckpointCorrupt
    other format, obs spec, actions-> CheckpointSpecMismatch
    sha256 differs from manifest   -> CheckpointHashMismatch
    NaN / inf weights or stats     -> CheckpointNaN

A decision is a few small matrix products in numpy (tens of microseconds on one core).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors

from engine.decision import Decision
from router.checkpoint import (ActionSpec, CheckpointCorrupt, CheckpointHashMismatch, CheckpointMissing,
                               CheckpointNaN, CheckpointSpecMismatch, Manifest, manifest_path, read_manifest,
                               sha256_of)

_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "identity": lambda x: x,
}


def _check_spec(manifest: Manifest, obs_spec_version: str | None, obs_names: Sequence[str] | None,
                actions: Sequence | None) -> None:
    if obs_spec_version is not None and manifest.obs_spec_version != str(obs_spec_version):
        raise CheckpointSpecMismatch(f"checkpoint was trained on observation spec {manifest.obs_spec_version!r}, "
                                     f"the environment uses {obs_spec_version!r}")
    if obs_names is not None and list(manifest.obs_names) != list(obs_names):
        raise CheckpointSpecMismatch(f"checkpoint observation features {manifest.obs_names} differ from "
                                     f"{list(obs_names)}")
    if actions is not None:
        expected = [a if isinstance(a, ActionSpec) else ActionSpec.from_decision(a) for a in actions]
        if [(a.chain, a.k, a.p_min) for a in expected] != [(a.chain, a.k, a.p_min) for a in manifest.actions]:
            raise CheckpointSpecMismatch(
                f"checkpoint actions {[a.label for a in manifest.actions]} differ from "
                f"{[a.label for a in expected]}")


def _read_weights(directory: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    file = directory / manifest.weights_file
    if not file.is_file():
        raise CheckpointMissing(f"no weights file at {file}")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CheckpointCorrupt(f"weights file {file} is unreadable: {exc}") from exc
    if len(data) != manifest.weights_bytes:
        raise CheckpointCorrupt(f"weights file {file} has {len(data)} bytes, the manifest says "
                                f"{manifest.weights_bytes} (truncated or replaced)")
    if sha256_of(data) != manifest.sha256:
        raise CheckpointHashMismatch(f"weights file {file} sha256 {sha256_of(data)[:12]}... differs from "
                                     f"the manifest's {manifest.sha256[:12]}...")
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointCorrupt(f"weights file {file} is not valid safetensors: {exc}") from exc


class LearnedPolicy:
    """A trained MLP router: `act(obs)` -> action index, greedy over logits or Q-values."""

    def __init__(self, manifest: Manifest, tensors: dict[str, np.ndarray]):
        self.manifest = manifest
        self._layers: list[tuple[np.ndarray, np.ndarray, object]] = []
        for layer in manifest.layers:
            try:
                weight = np.asarray(tensors[f"{layer.name}.weight"], dtype=np.float32)
                bias = np.asarray(tensors[f"{layer.name}.bias"], dtype=np.float32)
            except KeyError as exc:
                raise CheckpointCorrupt(f"weights file lacks tensor {exc.args[0]!r}") from exc
            if weight.shape != (layer.out_features, layer.in_features) or bias.shape != (layer.out_features,):
                raise CheckpointCorrupt(f"layer {layer.name} has shape {weight.shape}/{bias.shape}, the manifest "
                                        f"says ({layer.out_features}, {layer.in_features})")
            if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
                raise CheckpointNaN(f"layer {layer.name} has NaN or infinite weights")
            self._layers.append((np.ascontiguousarray(weight.T), bias, _ACTIVATIONS[layer.activation]))
        self._mean = self._scale = None
        self._clip = np.inf
        if manifest.normalization is not None:
            norm = manifest.normalization
            try:
                mean = np.asarray(norm["mean"], dtype=np.float64)
                var = np.asarray(norm["var"], dtype=np.float64)
                eps, clip = float(norm.get("epsilon", 1e-8)), float(norm.get("clip", np.inf))
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointCorrupt(f"normalization is malformed: {exc!r}") from exc
            if not (np.isfinite(mean).all() and np.isfinite(var).all() and np.isfinite(eps)) or (var < 0).any():
                raise CheckpointNaN("normalization statistics are NaN, infinite or negative")
            self._mean = mean.astype(np.float32)
            self._scale = (1.0 / np.sqrt(var + eps)).astype(np.float32)
            self._clip = clip
        self._obs_min = np.asarray(manifest.obs_min, dtype=np.float32)
        self._obs_max = np.asarray(manifest.obs_max, dtype=np.float32)

    @classmethod
    def load(cls, path: str | Path, *, obs_spec_version: str | None = None,
             obs_names: Sequence[str] | None = None, actions: Sequence | None = None) -> "LearnedPolicy":
        """Load a checkpoint directory; pass the environment's spec to refuse another one's policy."""
        manifest = read_manifest(path)
        _check_spec(manifest, obs_spec_version, obs_names, actions)
        tensors = _read_weights(manifest_path(path).parent, manifest)
        return cls(manifest, tensors)

    # ---- the Policy protocol ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"learned-{self.manifest.algo}"

    @property
    def num_actions(self) -> int:
        return len(self.manifest.actions)

    def reset(self) -> None:
        """Stateless: nothing to reset."""

    def observe(self, reward: float) -> None:
        """Stateless: rewards do not change a trained policy."""

    def _check_obs(self, obs) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        if x.shape[-1:] != (self.manifest.obs_dim,):
            raise ValueError(f"observation has shape {x.shape}, the policy expects "
                             f"(..., {self.manifest.obs_dim})")
        return x

    def action_values(self, obs) -> np.ndarray:
        """Logits (PPO) or Q-values (DQN) for one observation [obs_dim] or a batch [n, obs_dim]."""
        x = self._check_obs(obs)
        if not np.isfinite(x).all():
            raise ValueError("observation has NaN or infinite values")
        if self._mean is not None:
            x = np.clip((x - self._mean) * self._scale, -self._clip, self._clip)
        for weight_t, bias, activation in self._layers:
            x = activation(x @ weight_t + bias)
        return x

    def act(self, obs) -> int:
        return int(np.argmax(self.action_values(obs)))

    def action_probs(self, obs) -> np.ndarray:
        """The greedy policy as probabilities (one-hot), for off-policy evaluation."""
        values = self.action_values(obs)
        probs = np.zeros_like(values, dtype=np.float64)
        np.put_along_axis(probs, np.argmax(values, axis=-1)[..., None], 1.0, axis=-1)
        return probs

    # ---- guards for the server ----------------------------------------------------------------
    def out_of_range(self, obs, margin: float = 0.0) -> list[str]:
        """Names of features outside the range seen in training, widened by `margin` x its width."""
        x = self._check_obs(obs).reshape(-1)
        width = self._obs_max - self._obs_min
        low, high = self._obs_min - margin * width, self._obs_max + margin * width
        bad = ~np.isfinite(x) | (x < low) | (x > high)
        return [self.manifest.obs_names[i] for i in np.flatnonzero(bad)]

    def in_range(self, obs, margin: float = 0.0) -> bool:
        """True when every feature lies within the training range (see `out_of_range`)."""
        return not self.out_of_range(obs, margin)

    def decisions(self) -> list[Decision]:
        """The action list as engine Decisions (index i is action i)."""
        return [a.decision for a in self.manifest.actions]
