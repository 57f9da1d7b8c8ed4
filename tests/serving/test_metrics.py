"""/metrics exposes vLLM's KV-cache usage gauge beside the per-level free slots."""

from __future__ import annotations

import re

from serving.engine_loop import EngineSnapshot


def test_kv_cache_usage_is_a_fraction_after_a_request(client):
    assert client.post("/v1/completions", json={"prompt": "the cat sat on the mat", "max_tokens": 4}).status_code == 200
    text = client.get("/metrics").text
    usage = re.search(r'^vllm:kv_cache_usage_perc\{model_name="tiny"\} (\S+)$', text, re.MULTILINE)
    assert usage and 0.0 <= float(usage.group(1)) <= 1.0
    assert "specroute:kv_cache_free_slots{" in text


def test_kv_cache_usage_counts_the_tokens_held(make_state):
    state = make_state()
    engine = state.engine
    engine.add_request("the cat sat on the mat")
    engine.step()
    used = sum(engine.levels["target"].cache.lengths)
    assert used > 0 and EngineSnapshot.of(engine).kv_usage == used / engine.config.max_num_tokens
