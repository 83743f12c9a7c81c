"""Drives the gateway with the official OpenAI Python SDK.

Usage: python openai_client.py BASE_URL
Prints one JSON object with what the SDK saw; the Rust test asserts on it.
The gateway's simulator is scripted so that the third request's stream is
cut mid-way: the SDK must raise, not return a truncated answer.
"""

import json
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="unused-by-the-gateway", max_retries=0, timeout=20)
out = {}

# 1. Non-streaming.
raw = client.chat.completions.with_raw_response.create(
    model="chat-default",
    messages=[{"role": "user", "content": "hello"}],
)
completion = raw.parse()
out["plain"] = {
    "content": completion.choices[0].message.content,
    "finish_reason": completion.choices[0].finish_reason,
    "model": completion.model,
    "target": raw.headers.get("x-switchyard-target"),
    "usage_total": completion.usage.total_tokens if completion.usage else None,
}

# 2. Streaming, with usage in the stream.
stream = client.chat.completions.create(
    model="chat-default",
    messages=[{"role": "user", "content": "hello"}],
    stream=True,
    stream_options={"include_usage": True},
)
content, finish, usage = [], None, None
for chunk in stream:
    if chunk.choices:
        delta = chunk.choices[0].delta
        if delta.content:
            content.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage.total_tokens
out["stream"] = {"content": "".join(content), "finish_reason": finish, "usage_total": usage}

# 3. A stream cut mid-way: the SDK must raise.
received = []
try:
    for chunk in client.chat.completions.create(
        model="chat-default", messages=[{"role": "user", "content": "hello"}], stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)
    out["cut"] = {"raised": False, "content": "".join(received)}
except openai.APIError as e:
    out["cut"] = {"raised": True, "content": "".join(received), "message": str(e)}

# 4. Errors arrive as typed SDK exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    out["unknown_model"] = {"raised": False}
except openai.NotFoundError as e:
    out["unknown_model"] = {"raised": True, "status": e.status_code, "code": e.code}

# 5. Embeddings.
emb = client.embeddings.create(model="embed", input=["a", "b", "c"])
out["embeddings"] = {"count": len(emb.data), "dims": len(emb.data[0].embedding)}

print(json.dumps(out))
