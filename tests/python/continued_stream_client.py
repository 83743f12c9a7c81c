"""Reads one stream through each official SDK while the gateway continues
it on another target: the OpenAI SDK on `/v1/chat/completions`, then the
Anthropic SDK on `/v1/messages`. Both must see one complete answer, and
nothing that makes them raise.

Usage: python continued_stream_client.py BASE_URL
The gateway must have a route `chat` whose first target cuts each of the
two streams mid-answer and whose next target continues it.

Prints one JSON object with what each SDK saw; the Rust test asserts on it.
"""

import json
import sys

import anthropic
import openai

base_url = sys.argv[1].rstrip("/")
root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
out = {}

chat = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=20)
text, finishes, ids, models, usage = [], [], set(), set(), None
for chunk in chat.chat.completions.create(
    model="chat",
    messages=[{"role": "user", "content": "count"}],
    stream=True,
    stream_options={"include_usage": True},
):
    ids.add(chunk.id)
    models.add(chunk.model)
    if chunk.usage:
        usage = chunk.usage.completion_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            text.append(choice.delta.content)
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
out["openai"] = {
    "text": "".join(text),
    "finishes": finishes,
    "ids": len(ids),
    "models": len(models),
    "completion_tokens": usage,
}

messages = anthropic.Anthropic(base_url=root, api_key="unused", max_retries=0, timeout=20)
kinds = []
with messages.messages.stream(
    model="chat", max_tokens=1000, messages=[{"role": "user", "content": "count"}]
) as stream:
    for event in stream:
        kinds.append(event.type)
    final = stream.get_final_message()
out["anthropic"] = {
    "text": "".join(block.text for block in final.content if block.type == "text"),
    "stop_reason": final.stop_reason,
    "message_starts": kinds.count("message_start"),
    "message_stops": kinds.count("message_stop"),
    "output_tokens": final.usage.output_tokens,
}
print(json.dumps(out))
