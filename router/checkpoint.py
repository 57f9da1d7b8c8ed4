"""The policy checkpoint format: a safetensors weights file plus a JSON manifest.

A checkpoint directory holds `manifest.json` and the weights file it names. The manifest says
everything a loader needs to rebuild the network without pickle or stable-baselines3:

    format, format_version     "specroute-policy", 1
    algo                       "ppo" | "dqn"
    obs_spec                   {"version": str, "names": [str, ...]}
    actions                    [{"label": str, "chain": [str, ...], "k": int, "p_min": float (only when > 0)}, ...]
    network                    {"layers": [{"name", "in_features", "out_features", "activation"}],
                                "output": "logits" | "q_values"}
    normalization              null | {"mean": [...], "var": [...], "clip": float, "epsilon": float}
    obs_range                  {"min": [...], "max": [...]}  raw observations seen in training
    weights_file, weights_bytes, sha256
    training, evaluation       free-form dicts (the training config and evaluation summary)

Every way a checkpoint can be unusable raises a subclass of `CheckpointError`, so a server can
catch the base class and fall back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.decision import Decision

FORMAT = "specroute-policy"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "policy.safetensors"
ACTIVATIONS = ("tanh", "relu", "identity")
OUTPUTS = ("logits", "q_values")


class CheckpointError(Exception):
    """Base class: the checkpoint cannot be used (catch this to fall back). `cause` names the
    failure in the server's fallback metrics."""

    cause = "checkpoint_corrupt"


class CheckpointMissing(CheckpointError):
    """The directory, the manifest or the weights file does not exist."""

    cause = "checkpoint_missing"


class CheckpointCorrupt(CheckpointError):
    """A file is truncated, unreadable, or inconsistent with the manifest."""

    cause = "checkpoint_corrupt"


class CheckpointHashMismatch(CheckpointError):
    """The weights file's sha256 differs from the one the manifest records."""

    cause = "checkpoint_hash"


class CheckpointNaN(CheckpointError):
    """A weight or normalisation statistic is NaN or infinite."""

    cause = "checkpoint_nan"


class CheckpointSpecMismatch(CheckpointError):
    """The checkpoint was made for another format, observation spec or action list."""

    cause = "checkpoint_spec"


@dataclass(frozen=True)
class ActionSpec:
    """One entry of the Discrete action list, as the engine's Decision sees it."""

    label: str
    chain: tuple[str, ...]
    k: int
    p_min: float = 0.0              # the draft's stop threshold; written only when set

    @classmethod
    def from_decision(cls, decision) -> "ActionSpec":
        return cls(decision.label, tuple(decision.chain), int(decision.k), float(decision.p_min))

    @classmethod
    def from_json(cls, data: dict) -> "ActionSpec":
        return cls(str(data["label"]), tuple(data["chain"]), int(data["k"]), float(data.get("p_min", 0.0)))

    @property
    def decision(self) -> Decision:
        return Decision(self.chain, self.k, self.p_min)

    def to_json(self) -> dict:
        return {"label": self.label, "chain": list(self.chain), "k": self.k, **({"p_min": self.p_min} if self.p_min else {})}


@dataclass
class LayerSpec:
    name: str
    in_features: int
    out_features: int
    activation: str

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")


@dataclass
class Manifest:
    """The parsed manifest; `validate()` checks its internal consistency."""

    algo: str
    obs_spec_version: str
    obs_names: list[str]
    actions: list[ActionSpec]
    layers: list[LayerSpec]
    output: str
    obs_min: list[float]
    obs_max: list[float]
    sha256: str
    weights_bytes: int
    weights_file: str = WEIGHTS_NAME
    normalization: dict | None = None
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def obs_dim(self) -> int:
        return len(self.obs_names)

    def validate(self) -> None:
        """Raise CheckpointCorrupt when the pieces do not fit together."""
        n = self.obs_dim
        if self.output not in OUTPUTS:
            raise CheckpointCorrupt(f"network output must be one of {OUTPUTS}, got {self.output!r}")
        if not self.layers:
            raise CheckpointCorrupt("manifest lists no layers")
        if self.layers[0].in_features != n:
            raise CheckpointCorrupt(f"first layer takes {self.layers[0].in_features} features, "
                                    f"the observation spec has {n}")
        for prev, nxt in zip(self.layers, self.layers[1:]):
            if prev.out_features != nxt.in_features:
                raise CheckpointCorrupt(f"layer {prev.name} outputs {prev.out_features}, "
                                        f"{nxt.name} takes {nxt.in_features}")
        if self.layers[-1].out_features != len(self.actions):
            raise CheckpointCorrupt(f"last layer outputs {self.layers[-1].out_features} values "
                                    f"for {len(self.actions)} actions")
        if len(self.obs_min) != n or len(self.obs_max) != n:
            raise CheckpointCorrupt("obs_range must have one min and one max per observation feature")
        if self.normalization is not None:
            for key in ("mean", "var"):
                if len(self.normalization.get(key, ())) != n:
                    raise CheckpointCorrupt(f"normalization.{key} must have {n} entries")

    def to_json(self) -> dict:
        return {
            "format": self.format, "format_version": self.format_version, "algo": self.algo,
            "obs_spec": {"version": self.obs_spec_version, "names": list(self.obs_names)},
            "actions": [a.to_json() for a in self.actions],
            "network": {"layers": [asdict(layer) for layer in self.layers], "output": self.output},
            "normalization": self.normalization,
            "obs_range": {"min": list(self.obs_min), "max": list(self.obs_max)},
            "weights_file": self.weights_file, "weights_bytes": self.weights_bytes, "sha256": self.sha256,
            "training": self.training, "evaluation": self.evaluation,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        """Parse a manifest dict; a wrong format is a spec mismatch, a malformed one corrupt."""
        if not isinstance(data, dict):
            raise CheckpointCorrupt("manifest is not a JSON object")
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise CheckpointSpecMismatch(
                f"checkpoint format {data.get('format')!r} v{data.get('format_version')!r}; "
                f"this loader reads {FORMAT!r} v{FORMAT_VERSION}")
        try:
            manifest = cls(
                algo=str(data["algo"]),
                obs_spec_version=str(data["obs_spec"]["version"]),
                obs_names=[str(n) for n in data["obs_spec"]["names"]],
                actions=[ActionSpec.from_json(a) for a in data["actions"]],
                layers=[LayerSpec(**layer) for layer in data["network"]["layers"]],
                output=str(data["network"]["output"]),
                obs_min=[float(v) for v in data["obs_range"]["min"]],
                obs_max=[float(v) for v in data["obs_range"]["max"]],
                sha256=str(data["sha256"]),
                weights_bytes=int(data["weights_bytes"]),
                weights_file=str(data.get("weights_file", WEIGHTS_NAME)),
                normalization=data.get("normalization"),
                training=dict(data.get("training") or {}),
                evaluation=dict(data.get("evaluation") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointCorrupt(f"manifest is malformed: {exc!r}") from exc
        if Path(manifest.weights_file).name != manifest.weights_file:
            raise CheckpointCorrupt(f"weights_file must be a plain file name, got {manifest.weights_file!r}")
        manifest.validate()
        return manifest


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_path(path: str | Path) -> Path:
    """Accept a checkpoint directory or the manifest file itself."""
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() or path.suffix != ".json" else path


def read_manifest(path: str | Path) -> Manifest:
    """Read and parse the manifest of a checkpoint directory (no weights are read)."""
    file = manifest_path(path)
    if not file.is_file():
        raise CheckpointMissing(f"no policy manifest at {file}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointCorrupt(f"manifest {file} is unreadable: {exc}") from exc
    return Manifest.from_json(data)


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    file = Path(directory) / MANIFEST_NAME
    file.write_text(json.dumps(manifest.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return file


def update_manifest(directory: str | Path, **fields) -> Manifest:
    """Rewrite manifest fields that do not touch the weights (evaluation, training, normalization)."""
    allowed = {"evaluation", "training", "normalization"}
    if set(fields) - allowed:
        raise ValueError(f"only {sorted(allowed)} may be updated, got {sorted(fields)}")
    manifest = read_manifest(directory)
    for name, value in fields.items():
        setattr(manifest, name, value)
    manifest.validate()
    write_manifest(manifest_path(directory).parent, manifest)
    return manifest
