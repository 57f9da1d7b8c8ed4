"""The engine's per-token logprobs (engine/logprobs.py) as each endpoint spells them.

Chat (OpenAI's current format): `{"content": [{"token", "logprob", "bytes", "top_logprobs":
[{"token", "logprob", "bytes"}, ...]}, ...]}`. Completions (the legacy one): `{"tokens",
"token_logprobs", "top_logprobs": [{token: logprob}, ...], "text_offset"}`, where each
`top_logprobs` dict holds the alternatives and the chosen token (as vLLM's), and `text_offset`
counts characters of the token strings before each token in the choice's whole output, across
chunks. A token's string is its own decoding; JSON has no -inf, so a logprob below
`MIN_LOGPROB` is sent as it (vLLM's choice).
"""

from __future__ import annotations

from engine.logprobs import TokenLogprob

MIN_LOGPROB = -9999.0


def _finite(logprob: float) -> float:
    return max(logprob, MIN_LOGPROB)


class LogprobsWriter:
    """Writes one response's logprobs, chunk by chunk; keeps each choice's text offset."""

    def __init__(self, tokenizer, is_chat: bool):
        self.tokenizer = tokenizer
        self.is_chat = is_chat
        self.text_offsets: dict[int, int] = {}      # choice index -> characters of token strings so far

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _chat_entry(self, token_id: int, logprob: float) -> dict:
        text = self.token_text(token_id)
        return {"token": text, "logprob": _finite(logprob), "bytes": list(text.encode("utf-8", errors="replace"))}

    def write(self, index: int, entries: list[TokenLogprob] | None) -> dict | None:
        """The `logprobs` of choice `index` for these entries (its next ones); None when not asked."""
        if entries is None:
            return None
        if self.is_chat:
            return {"content": [{**self._chat_entry(e.token_id, e.logprob),
                                 "top_logprobs": [self._chat_entry(t, lp) for t, lp in e.top]} for e in entries]}
        tokens = [self.token_text(e.token_id) for e in entries]
        offsets, offset = [], self.text_offsets.get(index, 0)
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        self.text_offsets[index] = offset
        return {"tokens": tokens, "token_logprobs": [_finite(e.logprob) for e in entries],
                "top_logprobs": [{**{self.token_text(t): _finite(lp) for t, lp in e.top}, token: _finite(e.logprob)}
                                 for token, e in zip(tokens, entries)],
                "text_offset": offsets}
