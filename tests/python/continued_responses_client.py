"""Reads two Responses API streams through the official OpenAI SDK while
the gateway continues each on another target: one with
`client.responses.stream(...)` (the helper that accumulates the final
response), one with `client.responses.create(stream=True)` (raw events).
Each must read as one complete response, with nothing that makes the SDK
raise.

Usage: python continued_responses_client.py BASE_URL
The gateway must have a route `chat` whose first target cuts each of the
two streams mid-answer and whose next target continues it.

Prints one JSON object with what each way saw; the Rust test asserts on it.
"""

import json
import sys

import openai

base_url = sys.argv[1].rstrip("/")
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20)


def summary(events, final):
    numbers = [e.sequence_number for e in events]
    kinds = [e.type for e in events]
    return {
        "deltas": "".join(e.delta for e in events if e.type == "response.output_text.delta"),
        "done_text": "".join(e.text for e in events if e.type == "response.output_text.done"),
        "final_text": final.output_text,
        "status": final.status,
        "numbered_in_order": numbers == list(range(len(numbers))),
        "created": kinds.count("response.created"),
        "completed": kinds.count("response.completed"),
        "output_tokens": final.usage.output_tokens if final.usage else None,
    }


out = {}
with client.responses.stream(model="chat", input="count") as stream:
    events = list(stream)
    final = stream.get_final_response()
out["stream"] = summary(events, final)

events = list(client.responses.create(model="chat", input="count", stream=True))
final = next(e.response for e in events if e.type == "response.completed")
out["create"] = summary(events, final)
print(json.dumps(out))
