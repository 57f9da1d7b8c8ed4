"""Each way a checkpoint is unusable names its fallback cause (the server's metrics label)."""

from __future__ import annotations

from router.checkpoint import (CheckpointCorrupt, CheckpointError, CheckpointHashMismatch, CheckpointMissing,
                               CheckpointNaN, CheckpointSpecMismatch, read_manifest)


def test_every_checkpoint_error_names_its_cause():
    causes = {error.cause for error in (CheckpointMissing, CheckpointCorrupt, CheckpointHashMismatch, CheckpointNaN,
                                        CheckpointSpecMismatch)}
    assert causes == {"checkpoint_missing", "checkpoint_corrupt", "checkpoint_hash", "checkpoint_nan",
                      "checkpoint_spec"}
    assert CheckpointError.cause == "checkpoint_corrupt"


def test_the_shipped_router_checkpoint_reads():
    from env.config import resolve_path
    manifest = read_manifest(resolve_path("checkpoints/router"))
    assert manifest.obs_spec_version == "specroute-obs-v3" and manifest.actions
