"""bench/bench_draft.py end to end on a tiny saved target and draft (subprocess, tiny budget)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_draft import DraftBenchArgs
from engine.draft_checkpoint import DraftManifest, architecture_of, save_draft
from engine.draft_model import build_draft
from engine.eagle_head import build_eagle_head
from engine.models import load_model
from tests.tiny_models import build_tiny_llama

REPO = Path(__file__).resolve().parents[2]


def test_bench_draft_reports_acceptance_speedups_and_lossless_outputs(tmp_path, tokenizer):
    model_dir = tmp_path / "tiny"
    build_tiny_llama(seed=4, num_layers=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    target = load_model(str(model_dir))
    manifest = DraftManifest(target.name, target.sha256, architecture_of(target.model.config, 2), [0, 1],
                             storage_dtype="float32")
    save_draft(build_draft(target.model, [0, 1]), tmp_path / "draft", manifest)   # = the target: all accepted
    eagle = DraftManifest(target.name, target.sha256, architecture_of(target.model.config, 1), [1],
                          storage_dtype="float32", kind="eagle")
    save_draft(build_eagle_head(target.model), tmp_path / "eagle", eagle)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench.bench_draft", "--model", str(model_dir), "--draft", str(tmp_path / "draft"),
           "--eagle", str(tmp_path / "eagle"),
           "--categories", "qa,translation", "--max-tokens", "6", "--draft-ks", "2", "--ngram-ks", "3",
           "--no-cost-table", "--num-threads", "1", "--output-name", "draft_test", "--output-dir", str(results)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((results / "draft_test.json").read_text())
    assert "Levels side by side" in (results / "draft_test.md").read_text()
    assert set(data["mixed"]) == {"hf-plain", "plain", "draft-k2", "ngram-draft-k3", "eagle-k2", "ngram-eagle-k3",
                                  "int4-k2", "ngram-int4-k3", "draft-int4-k2", "ngram-draft-int4-k3"}
    assert all(row["identical_to_plain"] for row in data["mixed"].values())
    assert [c["category"] for c in data["categories"]] == ["qa", "translation"]
    assert data["levels"]["draft"]["top1_agreement"] == 1.0
    assert 0 <= data["levels"]["eagle"]["top1_agreement"] <= 1 and data["levels"]["eagle"]["step_ratio"] > 0
    assert data["mixed"]["draft-k2"]["pairs"]["draft>target"]["alpha"] == 1.0
    assert data["mixed"]["ngram-draft-int4-k3"]["pairs"].keys() >= {"draft>int4", "int4>target"}
    assert set(data["summary"]) == {"draft_acceptance", "draft_step_ratio", "draft_chain_x_plain"}
    assert all(isinstance(v, float) for v in data["summary"].values())


def test_bench_args_reject_bad_values():
    with pytest.raises(ValueError, match="draft-ks"):
        DraftBenchArgs(draft_ks="2,x")
    with pytest.raises(ValueError, match="unknown categories"):
        DraftBenchArgs(categories="poetry")
