"""Drives the gateway's Responses API with the official OpenAI Python SDK.

Usage: python openai_responses_client.py BASE_URL
Prints one JSON object with what the SDK saw; the Rust test (tests/responses_sdk.rs)
scripts the simulators' faults in the order of the calls below and asserts on it.
"""

import json
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="unused-by-the-gateway", max_retries=0, timeout=20)
out = {}

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}


def target(raw):
    return raw.headers.get("x-switchyard-target")


# A. Non-streaming; the native primary answers 503 twice.
raw = client.responses.with_raw_response.create(model="conv", input="hello", instructions="be brief")
plain = raw.parse()
out["plain"] = {
    "id": plain.id,
    "text": plain.output_text,
    "status": plain.status,
    "target": target(raw),
    "usage_total": plain.usage.total_tokens if plain.usage else None,
}

# B. Streaming events; the primary answers 429 + Retry-After first.
types, deltas, final = [], [], None
with client.responses.with_streaming_response.create(model="conv", input="hello", stream=True) as raw:
    stream_target = target(raw)
    for event in raw.parse():
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type == "response.completed":
            final = event.response
out["stream"] = {
    "first": types[0],
    "last": types[-1],
    "text": "".join(deltas),
    "final_text": final.output_text if final else None,
    "target": stream_target,
}

# C. The SDK's accumulating stream helper; the primary is cut before content.
with client.responses.stream(model="conv", input="hello") as stream:
    for _ in stream:
        pass
    helper_final = stream.get_final_response()
out["helper"] = {"text": helper_final.output_text, "status": helper_final.status}

# D. A function-tool round trip; the second turn fails over (503 twice) and
#    must carry the conversation to the fallback.
first = client.responses.create(model="conv", input="weather in Paris?", tools=[WEATHER])
calls = [item for item in first.output if item.type == "function_call"]
call = calls[0]
args = json.loads(call.arguments)
raw = client.responses.with_raw_response.create(
    model="conv",
    previous_response_id=first.id,
    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
    tools=[WEATHER],
)
second = raw.parse()
out["tools"] = {
    "name": call.name,
    "location": args.get("location"),
    "answer": second.output_text,
    "second_target": target(raw),
}

# E. Structured output (JSON schema).
structured = client.responses.create(
    model="conv",
    input="give me a name",
    text={
        "format": {
            "type": "json_schema",
            "name": "person",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "strict": True,
        }
    },
)
out["structured"] = {"parsed": json.loads(structured.output_text)}

# F. Stored responses: retrieve, list input items, delete.
got = client.responses.retrieve(plain.id)
items = client.responses.input_items.list(plain.id)
deleted = client.responses.delete(plain.id)
try:
    client.responses.retrieve(plain.id)
    after_delete = None
except openai.NotFoundError as e:
    after_delete = e.status_code
out["stored"] = {
    "same_text": got.output_text == plain.output_text,
    "items": [item.type for item in items.data],
    "deleted_returned": deleted is None or True,
    "after_delete": after_delete,
}

# G. A stream cut after content: the gateway continues it on the next
#    target, and the SDK reads one complete response (raising would mean
#    the continuation was not made, or broke the event sequence).
received, numbers, final = [], [], None
try:
    for event in client.responses.create(model="conv", input="hello", stream=True):
        numbers.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            received.append(event.delta)
        if event.type == "response.completed":
            final = event.response
    out["cut"] = {
        "raised": False,
        "text": "".join(received),
        "final_text": final.output_text if final else None,
        "numbered_in_order": numbers == list(range(len(numbers))),
    }
except openai.APIError as e:
    out["cut"] = {"raised": True, "text": "".join(received), "message": str(e)}

# H. A translated route: chat-only primary down (503 twice), Gemini answers.
with client.responses.with_streaming_response.create(model="translated", input="hello", stream=True) as raw:
    translated_target = target(raw)
    events = list(raw.parse())
out["translated"] = {
    "target": translated_target,
    "last": events[-1].type,
    "text": events[-1].response.output_text if events[-1].type == "response.completed" else None,
}

print(json.dumps(out))
