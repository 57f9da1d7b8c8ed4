"""What `bench.reliability` sends the server's generation routes besides schemathesis' cases
(`tests/serving/contract.py`): hand-written bad inputs (malformed JSON, wrong content type,
NaN/Infinity, lone surrogates in every string field, out-of-range numbers, an oversize body,
unknown and unsupported fields). `tally` is `bench.reliability.Tally`: it sends a request and
checks the response against the document."""

from __future__ import annotations

import json

import httpx

COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
SURROGATE = "\\ud800"      # as JSON text: decodes to a lone surrogate


def bad_inputs() -> list[tuple[str, str, bytes | str, dict, str]]:
    """(label, path, raw body, headers, expectation) with expectation '400', '413', '200' or 'refused'."""
    json_type = {"content-type": "application/json"}
    cases = [("malformed JSON", COMPLETIONS, '{"prompt": "x",', json_type, "400"),
             ("empty body", COMPLETIONS, "", json_type, "400"),
             ("wrong content type", COMPLETIONS, "prompt=hi", {"content-type": "application/x-www-form-urlencoded"}, "400"),
             ("not an object", CHAT, '["hi"]', json_type, "400"),
             ("invalid UTF-8", COMPLETIONS, b'{"prompt": "\xff\xfe"}', json_type, "400"),
             ("oversize body", COMPLETIONS, '{"prompt": "' + "a" * (1 << 20) + '"}', json_type, "413")]
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        for name in ("temperature", "top_p", "max_tokens", "seed"):
            cases.append((f"{name}={literal}", COMPLETIONS, f'{{"prompt": "hi", "{name}": {literal}}}', json_type, "400"))
    chat_fields = {"model": f'"{SURROGATE}"', "user": f'"{SURROGATE}"', "stop": f'["{SURROGATE}"]',
                   "messages": f'[{{"role": "user", "content": "{SURROGATE}"}}]'}
    for name, value in chat_fields.items():
        body = {"messages": '[{"role": "user", "content": "hi"}]', "max_tokens": "2", name: value}
        cases.append((f"surrogate in {name}", CHAT, "{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}",
                      json_type, "400"))
    cases += [("surrogate in prompt", COMPLETIONS, f'{{"prompt": "a{SURROGATE}"}}', json_type, "400"),
              ("surrogate in text part", CHAT, f'{{"messages": [{{"role": "user", "content": [{{"type": "text", '
                                               f'"text": "{SURROGATE}"}}]}}]}}', json_type, "400"),
              ("surrogate in suffix", COMPLETIONS, f'{{"prompt": "a", "suffix": "{SURROGATE}"}}', json_type, "400")]
    for name, value in [("max_tokens", 0), ("max_tokens", -1), ("n", 17), ("temperature", -1), ("top_p", 1.5),
                        ("seed", 2 ** 70), ("top_k", -2), ("presence_penalty", 3), ("prompt", [10 ** 9]),
                        ("prompt", [-1]), ("prompt", [])]:
        cases.append((f"{name}={value!r:.20}", COMPLETIONS, json.dumps({"prompt": "hi", name: value}), json_type, "400"))
    cases.append(("unknown field", COMPLETIONS, json.dumps({"prompt": "hi", "max_tokens": 2, "x_unknown": 1}),
                  json_type, "200"))
    unsupported = [(COMPLETIONS, {"logit_bias": {"5": 10}}), (COMPLETIONS, {"logprobs": 0}), (COMPLETIONS, {"echo": True}),
                   (COMPLETIONS, {"stream_options": {"include_usage": True}}), (COMPLETIONS, {"best_of": 2}),
                   (COMPLETIONS, {"suffix": "end"}), (COMPLETIONS, {"min_tokens": 3}),
                   (COMPLETIONS, {"frequency_penalty": 0.5}), (CHAT, {"tool_choice": "auto"}),
                   (CHAT, {"tools": [{"type": "function", "function": {"name": "f"}}]}), (CHAT, {"top_logprobs": 2}),
                   (CHAT, {"logprobs": True}), (CHAT, {"response_format": {"type": "json_object"}}),
                   (CHAT, {"parallel_tool_calls": True}), (CHAT, {"functions": [{"name": "f"}]}),
                   (CHAT, {"messages": [{"role": "user", "content": "hi"},
                                        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]}),
                   (CHAT, {"messages": [{"role": "user", "content": "hi", "name": "ann"}]})]
    for path, extra in unsupported:
        base = {"prompt": "hi"} if path == COMPLETIONS else {"messages": [{"role": "user", "content": "hi"}]}
        label = "unsupported " + ",".join(extra) + (f" {json.dumps(extra)[:40]}" if "messages" in extra else "")
        cases.append((label, path, json.dumps({**base, "max_tokens": 2, **extra}), json_type, "refused"))
    return cases


def run_bad_inputs(client: httpx.Client, document: dict, tally) -> int:
    wrong = 0
    for label, path, body, headers, expected in bad_inputs():
        response = tally.send(client, document, path, label, content=body, headers=headers)
        if response is None:
            continue
        if expected == "refused":
            if response.status_code != 400:
                tally.ignored_fields_accepted += 1
                tally.note(f"accepted {label}: {response.status_code}")
            continue
        if str(response.status_code) != expected:
            wrong += 1
            tally.note(f"unexpected status {label}: {response.status_code} (expected {expected})")
    return wrong
