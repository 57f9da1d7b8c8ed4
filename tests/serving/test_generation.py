"""The SSE stream under bursts: several engine outputs queued before the handler reads any."""

from __future__ import annotations

import asyncio
import json

from engine import FinishReason, RequestOutput
from engine.sequence import SpecStats
from serving.choices import Choice
from serving.engine_loop import RequestStream
from serving.generation import _stream
from serving.responses import ResponseFormat


def test_outputs_that_arrive_together_are_all_streamed(make_state, tokenizer):
    state = make_state()
    ids = tokenizer.encode("hello world", add_special_tokens=False)

    async def run() -> list[str]:
        stream = RequestStream("r-0", asyncio.get_running_loop(), num_prompt_tokens=3)
        for end in (4, 8):
            stream.queue.put_nowait(RequestOutput("r-0", ids[end - 4:end], ids[:end], False, None, SpecStats()))
        stream.queue.put_nowait(RequestOutput("r-0", ids[8:], ids, True, FinishReason.LENGTH, SpecStats(),
                                              "hello world"))
        choice = Choice(0, 0, stream, tokenizer, [], arrival=0.0)
        return [chunk async for chunk in _stream(state, [choice], ResponseFormat("completion", "x", "tiny"), False)]

    chunks = asyncio.run(run())
    assert chunks[-1] == "data: [DONE]\n\n"

    bodies = [json.loads(c[len("data: "):]) for c in chunks[:-1]]
    assert "".join(b["choices"][0]["text"] for b in bodies) == "hello world"
    assert [b["choices"][0]["finish_reason"] for b in bodies] == [None, None, "length"]
