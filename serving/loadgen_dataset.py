"""A user's prompt file for the load generator (`--dataset-name custom --dataset-path FILE`).

JSON Lines, one object per line, as `vllm bench serve --dataset-name custom` reads them:

    {"prompt": "Write a haiku about caches.", "max_tokens": 64}
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}

"prompt" (a string) goes to /v1/completions, "messages" (an OpenAI chat list) to
/v1/chat/completions; "max_tokens" (or "output_len") sets that request's output length. Blank
lines are skipped. A bad line is refused with its line number, so a long file is fixed in one go.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from env.prompt_sources import Prompt
from serving.json_types import parse_json_object

DATASET_SOURCE = "custom"


class DatasetError(ValueError):
    """A prompt file that cannot be used; the message is one line naming the file (and line)."""


@dataclass(frozen=True)
class DatasetPrompt(Prompt):
    """A prompt from a user's file; `messages` holds the whole chat list of a "messages" line."""

    messages: tuple[dict, ...] | None = None


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_messages(value: object) -> tuple[dict, ...] | None:
    """The chat list, or None when it is not a non-empty list of {"role": str, "content": str}."""
    if not isinstance(value, list) or not value:
        return None
    for message in value:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            return None
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def parse_prompt_line(line: str, line_number: int) -> DatasetPrompt:
    """One line of a prompt file; a DatasetError says what is wrong with it (without the file name)."""
    try:
        item = parse_json_object(line, f"line {line_number}")
    except ValueError as error:
        raise DatasetError(str(error)) from None
    output_len = item.get("max_tokens", item.get("output_len"))
    if output_len is not None and not _positive_int(output_len):
        raise DatasetError(f"line {line_number}: max_tokens / output_len must be an integer > 0, got {output_len!r}")
    if "messages" in item:
        messages = _parse_messages(item["messages"])
        if messages is None:
            raise DatasetError(f"line {line_number}: \"messages\" must be a non-empty list of "
                               "{\"role\": str, \"content\": str}")
        text = "\n\n".join(m["content"] for m in messages)
        return DatasetPrompt(DATASET_SOURCE, str(line_number), DATASET_SOURCE, text, is_chat=True,
                             reference_tokens=output_len, messages=messages)
    if isinstance(item.get("prompt"), str) and item["prompt"]:
        return DatasetPrompt(DATASET_SOURCE, str(line_number), DATASET_SOURCE, item["prompt"], is_chat=False,
                             reference_tokens=output_len)
    raise DatasetError(f"line {line_number} needs \"prompt\" (a non-empty string) or \"messages\" (a chat list)")


def read_prompt_file(path: str | Path) -> list[DatasetPrompt]:
    """Every prompt of a JSON Lines prompt file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"--dataset-path {path} does not exist or is not a file")
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                prompts.append(parse_prompt_line(line, line_number))
            except DatasetError as error:
                raise DatasetError(f"{path}: {error}") from None
    if not prompts:
        raise DatasetError(f"{path} has no prompts")
    return prompts


def read_trace_csv(path: Path) -> list[tuple[float, int | None]]:
    """(seconds from the first request, generated tokens or None) per row of a trace CSV."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"trace {path} has no rows")
    out = []
    for row in rows:
        if "TIMESTAMP" in row:
            stamp = datetime.strptime(row["TIMESTAMP"][:26], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        elif "time_s" in row:
            stamp = float(row["time_s"])
        else:
            raise ValueError(f"trace {path} needs a TIMESTAMP or time_s column")
        generated = row.get("GeneratedTokens") or row.get("output_tokens")
        out.append((stamp, int(generated) if generated else None))
    start = out[0][0]
    return [(t - start, g) for t, g in out]
