"""Incremental detokenisation for streaming: text deltas that never split a character or leak a stop string.

Decoding only a short window (vLLM's prefix/read offsets) keeps each step O(window), not
O(output). A delta ending in U+FFFD (half of a multi-byte character) waits for the next token.
With stop strings, the last `len(longest stop) - 1` characters are held back until the request
ends, because they could be the start of a stop string the engine will cut.
"""

from __future__ import annotations

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.hold_back = max((len(s) for s in stop or []), default=1) - 1
        self.token_ids: list[int] = []
        self.text = ""                  # everything decoded so far
        self.num_emitted = 0            # characters of `text` already sent to the client
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _decode_new(self) -> None:
        prefix = self._decode(self.token_ids[self._prefix_offset:self._read_offset])
        window = self._decode(self.token_ids[self._prefix_offset:])
        if len(window) > len(prefix) and not window.endswith(REPLACEMENT_CHAR):
            self.text += window[len(prefix):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.token_ids)

    def push(self, output_token_ids: list[int], finished: bool = False, final_text: str | None = None) -> str:
        """Take the request's full output so far; return the new text the client may see now.

        At the end, `final_text` (the engine's text, cut at a stop string) is authoritative:
        whatever of it was not sent yet is returned.
        """
        if len(output_token_ids) > len(self.token_ids):
            self.token_ids.extend(output_token_ids[len(self.token_ids):])
            self._decode_new()
        if finished:
            final = final_text if final_text is not None else self._decode(self.token_ids)
            sent = self.text[: self.num_emitted]
            delta = final[len(sent):] if final.startswith(sent) else ""
            self.text, self.num_emitted = final, len(final)
            return delta
        limit = len(self.text) - self.hold_back
        if limit <= self.num_emitted:
            return ""
        delta = self.text[self.num_emitted: limit]
        self.num_emitted = limit
        return delta
