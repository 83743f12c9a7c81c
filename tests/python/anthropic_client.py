"""Drives the gateway's Anthropic endpoint (`POST /v1/messages`) with the
official Anthropic Python SDK: the real client apps use must parse our
messages, streams and errors.

Usage: python anthropic_client.py BASE_URL
BASE_URL is the gateway's root or its `/v1` URL (the SDK appends
`/v1/messages` itself).

What the gateway must be set up with: a route `chat-default` whose
upstreams are simulators giving their canned answer (8 completion tokens:
"tok0 tok1 ... tok7", streamed as "tok0 ", "tok1 ", ...). Requests 1 to 4
below must reach a simulator and be answered normally; request 5's stream
must be cut after two content chunks (the simulator's `DropAfter(2)`).
Requests 6 and 7 are refused by the gateway itself and reach no upstream.

Prints one JSON object with what the SDK saw (and `failures`, the checks
that did not hold), then exits non-zero if any check failed.
"""

import json
import sys

import anthropic

base_url = sys.argv[1].rstrip("/")
base_url = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
client = anthropic.Anthropic(base_url=base_url, api_key="unused-by-the-gateway", max_retries=0, timeout=20)

MODEL = "chat-default"
CANNED = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
CANNED_STREAM = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
HELLO = [{"role": "user", "content": "hello"}]

out = {}
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


# 1. Non-streaming.
raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=HELLO)
message = raw.parse()
text = "".join(block.text for block in message.content if block.type == "text")
out["plain"] = {
    "id": message.id,
    "type": message.type,
    "role": message.role,
    "text": text,
    "stop_reason": message.stop_reason,
    "stop_sequence": message.stop_sequence,
    "input_tokens": message.usage.input_tokens,
    "output_tokens": message.usage.output_tokens,
    "target": raw.headers.get("x-switchyard-target"),
}
check(message.id.startswith("msg_"), "plain: id starts with msg_")
check(message.type == "message" and message.role == "assistant", "plain: an assistant message")
check(text == CANNED, "plain: the canned text")
check(message.stop_reason == "end_turn", "plain: stop_reason end_turn")
check(message.stop_sequence is None, "plain: stop_sequence null")
check(message.usage.input_tokens > 0, "plain: input tokens reported")
check(message.usage.output_tokens == 8, "plain: 8 output tokens")

# 2. Streaming with the SDK's helper, which accumulates the final message.
with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
out["stream_helper"] = {
    "text": streamed,
    "final_text": "".join(b.text for b in final.content if b.type == "text"),
    "stop_reason": final.stop_reason,
    "input_tokens": final.usage.input_tokens,
    "output_tokens": final.usage.output_tokens,
}
check(streamed == CANNED_STREAM, "stream_helper: the canned text")
check(out["stream_helper"]["final_text"] == CANNED_STREAM, "stream_helper: final message text")
check(final.stop_reason == "end_turn", "stream_helper: stop_reason end_turn")
check(final.usage.input_tokens > 0, "stream_helper: input tokens from message_delta")
check(final.usage.output_tokens == 8, "stream_helper: 8 output tokens")

# 3. Streaming as raw events.
events, deltas, stop_reason, output_tokens = [], [], None, None
for event in client.messages.create(model=MODEL, max_tokens=64, messages=HELLO, stream=True):
    events.append(event.type)
    if event.type == "content_block_delta" and event.delta.type == "text_delta":
        deltas.append(event.delta.text)
    elif event.type == "message_delta":
        stop_reason = event.delta.stop_reason
        output_tokens = event.usage.output_tokens
out["stream_events"] = {
    "types": sorted(set(events)),
    "first": events[0] if events else None,
    "last": events[-1] if events else None,
    "text": "".join(deltas),
    "stop_reason": stop_reason,
    "output_tokens": output_tokens,
}
check(events[:1] == ["message_start"], "stream_events: message_start first")
check(events[-1:] == ["message_stop"], "stream_events: message_stop last")
check(
    {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(events),
    "stream_events: block and delta events",
)
check("".join(deltas) == CANNED_STREAM, "stream_events: the canned text")
check(stop_reason == "end_turn", "stream_events: stop_reason end_turn")
check(output_tokens == 8, "stream_events: 8 output tokens")

# 4. Tools, with a tool round trip in the history. The simulator answers
#    text once a tool result is in the conversation, so this checks that the
#    request translates.
tools = [
    {
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
history = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18 C, cloudy"},
            {"type": "text", "text": "Summarize."},
        ],
    },
]
with_tools = client.messages.create(
    model=MODEL, max_tokens=64, messages=history, tools=tools, tool_choice={"type": "auto"}
)
out["tools"] = {
    "text": "".join(b.text for b in with_tools.content if b.type == "text"),
    "block_types": [b.type for b in with_tools.content],
    "stop_reason": with_tools.stop_reason,
}
check(out["tools"]["text"] == CANNED, "tools: the canned text")
check(with_tools.stop_reason == "end_turn", "tools: stop_reason end_turn")

# 5. A stream cut mid-way: the SDK must raise, not return a truncated answer.
received = []
try:
    for event in client.messages.create(model=MODEL, max_tokens=64, messages=HELLO, stream=True):
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            received.append(event.delta.text)
    out["cut"] = {"raised": False, "text": "".join(received)}
except anthropic.APIError as e:
    body = e.body if isinstance(e.body, dict) else {}
    out["cut"] = {
        "raised": True,
        "text": "".join(received),
        "error_type": (body.get("error") or {}).get("type"),
        "message": str(e),
    }
check(out["cut"]["raised"], "cut: the SDK raised")
check(out["cut"]["text"] == "tok0 tok1 ", "cut: the text before the cut")
check("cut" in out["cut"].get("message", ""), "cut: the message says the stream was cut")

# 6. A request the gateway cannot translate: a 400 in Anthropic's shape.
#    (`top_k` goes through `extra_body`: this SDK version no longer has it.)
try:
    client.messages.create(model=MODEL, max_tokens=64, messages=HELLO, extra_body={"top_k": 5})
    out["rejected"] = {"raised": False}
except anthropic.BadRequestError as e:
    out["rejected"] = {
        "raised": True,
        "status": e.status_code,
        "error_type": e.body["error"]["type"] if isinstance(e.body, dict) else None,
        "message": e.message,
    }
check(out["rejected"]["raised"], "rejected: top_k raised BadRequestError")
check(out["rejected"].get("error_type") == "invalid_request_error", "rejected: invalid_request_error")
check("top_k" in out["rejected"].get("message", ""), "rejected: the message names top_k")

# 7. Gateway errors arrive as typed SDK exceptions.
try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=HELLO)
    out["unknown_model"] = {"raised": False}
except anthropic.NotFoundError as e:
    out["unknown_model"] = {
        "raised": True,
        "status": e.status_code,
        "error_type": e.body["error"]["type"] if isinstance(e.body, dict) else None,
    }
check(out["unknown_model"]["raised"], "unknown_model: NotFoundError")
check(out["unknown_model"].get("error_type") == "not_found_error", "unknown_model: not_found_error")

out["failures"] = failures
print(json.dumps(out))
sys.exit(1 if failures else 0)
