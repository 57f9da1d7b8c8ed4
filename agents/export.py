"""Export a stable-baselines3 policy's MLP (PPO actor or DQN Q-net) to safetensors + manifest.

Only plain MLPs are exported: a flatten feature extractor, then Linear layers with Tanh or ReLU
between them. Anything else is refused with a ValueError rather than exported wrongly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_safetensors
from torch import nn

from router.checkpoint import WEIGHTS_NAME, ActionSpec, LayerSpec, Manifest, sha256_of, write_manifest

_ACTIVATION_NAMES = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def _mlp_layers(modules: Sequence[nn.Module], prefix: str) -> list[tuple[LayerSpec, nn.Linear]]:
    """Linear layers of a Sequential, each with the activation that follows it."""
    layers: list[tuple[LayerSpec, nn.Linear]] = []
    for module in modules:
        if isinstance(module, nn.Linear):
            spec = LayerSpec(f"{prefix}.{len(layers)}", module.in_features, module.out_features, "identity")
            layers.append((spec, module))
        elif type(module) in _ACTIVATION_NAMES:
            if not layers or layers[-1][0].activation != "identity":
                raise ValueError(f"activation {module} does not follow a Linear layer")
            layers[-1][0].activation = _ACTIVATION_NAMES[type(module)]
        elif not isinstance(module, (nn.Flatten, nn.Identity)):
            raise ValueError(f"cannot export module {type(module).__name__}: only Linear/Tanh/ReLU MLPs")
    return layers


def extract_mlp(model) -> tuple[str, str, list[tuple[LayerSpec, nn.Linear]]]:
    """(algo, output kind, layers) of an SB3 PPO or DQN model with an MLP policy."""
    policy = model.policy
    extractor = type(policy.features_extractor).__name__ if hasattr(policy, "features_extractor") else ""
    if hasattr(policy, "q_net"):
        if type(policy.q_net.features_extractor).__name__ != "FlattenExtractor":
            raise ValueError("only a FlattenExtractor can be exported")
        return "dqn", "q_values", _mlp_layers(list(policy.q_net.q_net), "layers")
    if hasattr(policy, "action_net") and hasattr(policy, "mlp_extractor"):
        if extractor != "FlattenExtractor":
            raise ValueError("only a FlattenExtractor can be exported")
        if not isinstance(policy.action_net, nn.Linear) or type(policy.action_dist).__name__ != "CategoricalDistribution":
            raise ValueError("only a Discrete-action actor can be exported")
        modules = list(policy.mlp_extractor.policy_net) + [policy.action_net]
        return "ppo", "logits", _mlp_layers(modules, "layers")
    raise ValueError(f"cannot export policy {type(policy).__name__}: expected PPO or DQN with an MLP")


def normalization_of(vec_normalize) -> dict | None:
    """Observation statistics of a VecNormalize wrapper (with the count a resumed run starts
    from), or None when there is none."""
    if vec_normalize is None or not getattr(vec_normalize, "norm_obs", False):
        return None
    rms = vec_normalize.obs_rms
    return {"mean": [float(v) for v in rms.mean], "var": [float(v) for v in rms.var],
            "clip": float(vec_normalize.clip_obs), "epsilon": float(vec_normalize.epsilon),
            "count": float(rms.count)}


@dataclass
class PackedPolicy:
    """An exported policy held in memory: its manifest, its tensors and their safetensors bytes."""

    manifest: Manifest
    tensors: dict[str, np.ndarray]
    weights: bytes


def pack_policy(model, *, obs_spec_version: str, obs_names: Sequence[str], actions: Sequence,
                obs_min: Sequence[float], obs_max: Sequence[float], vec_normalize=None,
                training: dict | None = None, evaluation: dict | None = None) -> PackedPolicy:
    """The checkpoint of `model` without writing it: `LearnedPolicy(packed.manifest,
    packed.tensors)` acts as the written one will; `write_policy` writes it.

    `actions` are engine Decisions (or ActionSpecs) in Discrete-action order; `obs_min`/`obs_max`
    are the raw observation ranges seen in training (the server's out-of-range guard).
    """
    algo, output, layers = extract_mlp(model)
    tensors: dict[str, np.ndarray] = {}
    for spec, linear in layers:
        tensors[f"{spec.name}.weight"] = linear.weight.detach().cpu().numpy().astype(np.float32)
        tensors[f"{spec.name}.bias"] = linear.bias.detach().cpu().numpy().astype(np.float32)
    if not all(np.isfinite(t).all() for t in tensors.values()):
        raise ValueError("refusing to export a policy with NaN or infinite weights")
    data = save_safetensors(tensors)
    manifest = Manifest(
        algo=algo, obs_spec_version=str(obs_spec_version), obs_names=list(obs_names),
        actions=[a if isinstance(a, ActionSpec) else ActionSpec.from_decision(a) for a in actions],
        layers=[spec for spec, _ in layers], output=output,
        obs_min=[float(v) for v in obs_min], obs_max=[float(v) for v in obs_max],
        sha256=sha256_of(data), weights_bytes=len(data), weights_file=WEIGHTS_NAME,
        normalization=normalization_of(vec_normalize),
        training=dict(training or {}), evaluation=dict(evaluation or {}),
    )
    manifest.validate()
    return PackedPolicy(manifest, tensors, data)


def write_policy(directory: str | Path, packed: PackedPolicy) -> Manifest:
    """Write `policy.safetensors` and `manifest.json` (once) into `directory`; return the manifest."""
    packed.manifest.validate()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / WEIGHTS_NAME).write_bytes(packed.weights)
    write_manifest(directory, packed.manifest)
    return packed.manifest


def export_policy(model, directory: str | Path, **fields) -> Manifest:
    """Write `model`'s checkpoint into `directory` (`pack_policy`'s fields); return the manifest."""
    return write_policy(directory, pack_policy(model, **fields))
