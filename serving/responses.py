"""OpenAI response bodies and SSE chunks for the two endpoints (completion and chat)."""

from __future__ import annotations

import json
import time

from serving.choices import Choice, usage_of
from serving.logprobs import LogprobsWriter


def sse(data: dict | str) -> str:
    """One server-sent event: `data: <json>` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class ResponseFormat:
    """How one endpoint spells its bodies; `kind` is 'completion' or 'chat'."""

    def __init__(self, kind: str, response_id: str, model: str, tokenizer=None):
        if kind not in ("completion", "chat"):
            raise ValueError(f"unknown response kind {kind!r}")
        self.kind = kind
        self.id = response_id
        self.model = model
        self.created = int(time.time())
        self.logprobs = LogprobsWriter(tokenizer, kind == "chat")

    @property
    def is_chat(self) -> bool:
        return self.kind == "chat"

    def _envelope(self, obj: str, choices: list[dict]) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def full(self, choices: list[Choice]) -> dict:
        """The non-streaming body."""
        rows = []
        for c in sorted(choices, key=lambda c: c.index):
            logprobs = self.logprobs.write(c.index, c.take_logprobs())
            if self.is_chat:
                row = {"index": c.index, "message": {"role": "assistant", "content": c.text},
                       "logprobs": logprobs, "finish_reason": c.finish_reason}
            else:
                row = {"index": c.index, "text": c.text, "logprobs": logprobs, "finish_reason": c.finish_reason}
            if c.spec_decode is not None:
                row["spec_decode"] = c.spec_decode
            rows.append(row)
        body = self._envelope("chat.completion" if self.is_chat else "text_completion", rows)
        body["usage"] = usage_of(choices)
        return body

    def chunk(self, index: int, text: str | None, finish_reason: str | None = None, role: bool = False,
              spec_decode: dict | None = None, logprobs: dict | None = None) -> dict:
        """One streamed chunk for one choice (its last one carries `spec_decode` when reported);
        `logprobs` are those of the tokens the chunk carries (`LogprobsWriter.write`)."""
        if self.is_chat:
            delta: dict = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            row = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        else:
            row = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
        if spec_decode is not None:
            row["spec_decode"] = spec_decode
        return self._envelope("chat.completion.chunk" if self.is_chat else "text_completion", [row])

    def usage_chunk(self, choices: list[Choice]) -> dict:
        """The last chunk when the client asked for stream_options.include_usage."""
        body = self._envelope("chat.completion.chunk" if self.is_chat else "text_completion", [])
        body["usage"] = usage_of(choices)
        return body
