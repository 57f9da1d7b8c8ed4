"""`env.calibrate` end to end on a tiny saved model: fits, writes a usable file, reports errors."""

from __future__ import annotations

from tests.tiny_models import build_char_tokenizer, build_tiny_llama
from env import SpecRouteEnv
from env.calibrate import CalibrateArgs, main, parse_args
from env.sim_calibration import SimCalibration


def test_calibrate_fits_the_sim_and_reports_sim_vs_real(tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    build_tiny_llama(seed=0, num_layers=2).save_pretrained(model_dir)
    build_char_tokenizer().save_pretrained(model_dir)
    cfg = parse_args(["--model", str(model_dir), "--draft", str(tmp_path / "no-draft"),
                      "--profile", str(tmp_path / "profile.json"), "--output-json", str(tmp_path / "acceptance.json"),
                      "--fit-prompts", "6", "--max-tokens", "6", "--max-prompt-tokens", "24",
                      "--compare-requests", "2", "--sim-repeats", "2", "--speed-seconds", "0.3",
                      "--profile-budget-s", "3", "--fit-ks", "2", "4",
                      "--profile-source", "fitted", "--clock", "wall", "--num-threads", "0"])
    assert isinstance(cfg, CalibrateArgs)
    main(cfg)
    report = capsys.readouterr().out
    for line in ("wrote", "acceptance ngram>target", "acceptance suffix>target", "acceptance int4>target",
                 "acceptance ngram>int4", "spec_bench", "humaneval-bursty", "azure_code", "sharegpt-offline",
                 "error", "env steps/s"):
        assert line in report
    calibration = SimCalibration.load(tmp_path / "acceptance.json")
    assert all(calibration.acceptance.has_pair(p) for p in ("ngram>target", "suffix>target", "int4>target"))
    assert {"qa", "humaneval", "azure_code"} <= set(calibration.prompt_lengths)
    env = SpecRouteEnv(backend="sim", profile=str(tmp_path / "profile.json"), acceptance=str(tmp_path / "acceptance.json"),
                       actions=["plain", "ngram>target@4", "suffix>target@4"])        # no draft was calibrated
    env.reset(seed=0)
    assert env.step(1)[4]["num_committed"] >= 1
