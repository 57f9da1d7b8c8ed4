"""Advantage-weighted regression of an exported router on logged steps, anchored to where it starts.

The network is the checkpoint's own MLP (its layers, activations and input normalisation, as
`router.learned_policy.LearnedPolicy` runs it), rebuilt in torch from its weights; the fitted
weights are exported in the same format, with the same manifest apart from the weights, so the
server loads the candidate exactly as it loads the deployed policy. The training range (the
server's out-of-range guard) is the deployed policy's: fine-tuning does not widen it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from safetensors.numpy import save as save_safetensors
from torch import nn

from agents.export import PackedPolicy
from agents.ope_estimators import LoggedSteps
from router.checkpoint import sha256_of
from router.learned_policy import LearnedPolicy

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def network_of(policy: LearnedPolicy) -> tuple[nn.Sequential, list[str]]:
    """(the policy's MLP in torch, the tensor name prefix of each Linear)."""
    modules, names = [], []
    for layer, (weight_t, bias, _) in zip(policy.manifest.layers, policy._layers):
        linear = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight_t.T)))
            linear.bias.copy_(torch.from_numpy(bias))
        modules.append(linear)
        names.append(layer.name)
        if layer.activation in _ACTIVATIONS:
            modules.append(_ACTIVATIONS[layer.activation]())
    return nn.Sequential(*modules), names


def normalized(policy: LearnedPolicy, obs: np.ndarray) -> torch.Tensor:
    """The network's input for raw observations [n, d], as LearnedPolicy.action_values makes it."""
    x = obs.astype(np.float32)
    if policy._mean is not None:
        x = np.clip((x - policy._mean) * policy._scale, -policy._clip, policy._clip)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def advantages(data: LoggedSteps, ridge: float = 1.0) -> np.ndarray:
    """[n] reward minus a ridge fit of the reward on the standardised observation."""
    z = (data.obs - data.obs.mean(axis=0)) / (data.obs.std(axis=0) + 1e-6)
    x = np.concatenate([np.ones((len(z), 1)), z], axis=1)                      # [n, 1 + d]
    weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ data.rewards)
    return data.rewards - x @ weights


def fit_candidate(deployed: LearnedPolicy, data: LoggedSteps, cfg) -> PackedPolicy:
    """The deployed policy after `cfg.epochs` full-batch steps of anchored AWR on `data`
    (cfg: agents.log_finetune.FineTuneConfig), packed (`LearnedPolicy(packed.manifest,
    packed.tensors)` runs it, `agents.export.write_policy` writes it)."""
    torch.manual_seed(cfg.seed)
    net, names = network_of(deployed)
    x = normalized(deployed, data.obs)                                            # [n, d]
    with torch.no_grad():
        anchor_logp = torch.log_softmax(net(x), dim=-1)                           # [n, A]
    adv = advantages(data)
    scale = cfg.temperature * max(float(adv.std()), 1e-8)
    weights = torch.from_numpy(np.minimum(np.exp(np.clip(adv / scale, None, 50.0)), cfg.max_weight)).float()
    actions = torch.from_numpy(data.actions)
    optimiser = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    for _ in range(cfg.epochs):
        logp = torch.log_softmax(net(x), dim=-1)                                  # [n, A]
        awr = -(weights * logp[torch.arange(len(actions)), actions]).mean() / weights.mean()
        kl = (anchor_logp.exp() * (anchor_logp - logp)).sum(dim=-1).mean()
        loss = awr + cfg.anchor * kl
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    linears = [m for m in net if isinstance(m, nn.Linear)]
    tensors = {}
    for name, linear in zip(names, linears):
        tensors[f"{name}.weight"] = linear.weight.detach().numpy().astype(np.float32)
        tensors[f"{name}.bias"] = linear.bias.detach().numpy().astype(np.float32)
    data_bytes = save_safetensors(tensors)
    manifest = copy.deepcopy(deployed.manifest)
    manifest.sha256, manifest.weights_bytes = sha256_of(data_bytes), len(data_bytes)
    return PackedPolicy(manifest, tensors, data_bytes)
