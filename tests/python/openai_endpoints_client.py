"""Drives the gateway's pass-through endpoints with the official OpenAI SDK.

Usage: python openai_endpoints_client.py BASE_URL
The gateway's routes are named ENDPOINT-FAILURE (e.g. `tts-cut`): the first
target of each fails that way (503, 429 with Retry-After, or a cut before
the first content) and the second answers. Prints one JSON object with what
the SDK saw and which target served each call; the Rust test asserts on it.
"""

import base64
import io
import json
import sys
import wave

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="unused-by-the-gateway", max_retries=0, timeout=30)
out = {}


def small_wav():
    """Half a second of 16 kHz mono 16-bit silence."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 8000)
    return buf.getvalue()


WAV = small_wav()


def completion(model):
    raw = client.completions.with_raw_response.create(model=model, prompt="Say hi", max_tokens=16)
    c = raw.parse()
    return {
        "text": c.choices[0].text,
        "finish_reason": c.choices[0].finish_reason,
        "object": c.object,
        "target": raw.headers.get("x-switchyard-target"),
    }


def completion_stream(model):
    raw = client.completions.with_raw_response.create(
        model=model, prompt="Say hi", stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = [], None, None
    for chunk in raw.parse():
        if chunk.choices:
            text.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    return {
        "text": "".join(text),
        "finish_reason": finish,
        "usage_completion": usage,
        "target": raw.headers.get("x-switchyard-target"),
    }


def moderation(model):
    raw = client.moderations.with_raw_response.create(model=model, input=["hello", "I will kill it"])
    m = raw.parse()
    return {
        "flagged": [r.flagged for r in m.results],
        "violence": m.results[1].categories.violence,
        "target": raw.headers.get("x-switchyard-target"),
    }


def image(model):
    raw = client.images.with_raw_response.generate(model=model, prompt="a cat", response_format="b64_json")
    img = raw.parse()
    png = base64.b64decode(img.data[0].b64_json)
    return {
        "count": len(img.data),
        "png": png[:8] == b"\x89PNG\r\n\x1a\n",
        "target": raw.headers.get("x-switchyard-target"),
    }


def speech(model):
    raw = client.audio.speech.with_raw_response.create(model=model, voice="alloy", input="hello")
    audio = raw.parse().content
    return {
        "len": len(audio),
        "frame_sync": audio[:2] == b"\xff\xfb",
        "content_type": raw.headers.get("content-type"),
        "target": raw.headers.get("x-switchyard-target"),
    }


def transcription(model):
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("hello.wav", WAV, "audio/wav")
    )
    return {"text": raw.parse().text, "target": raw.headers.get("x-switchyard-target")}


def transcription_text(model):
    raw = client.audio.transcriptions.with_raw_response.create(
        model=model, file=("hello.wav", WAV, "audio/wav"), response_format="text"
    )
    return {
        "text": raw.parse(),
        "content_type": raw.headers.get("content-type"),
        "target": raw.headers.get("x-switchyard-target"),
    }


def translation(model):
    raw = client.audio.translations.with_raw_response.create(
        model=model, file=("hello.wav", WAV, "audio/wav"), response_format="verbose_json"
    )
    t = raw.parse()
    return {"text": t.text, "target": raw.headers.get("x-switchyard-target")}


calls = {
    "completion": (completion, ["503", "429"]),
    "completion_stream": (completion_stream, ["503", "429", "cut"]),
    "moderation": (moderation, ["503", "429"]),
    "image": (image, ["503", "429"]),
    "speech": (speech, ["503", "429", "cut"]),
    "transcription": (transcription, ["503", "429"]),
    "transcription_text": (transcription_text, ["503"]),
    "translation": (translation, ["503"]),
}
routes = {
    "completion": "instruct",
    "completion_stream": "instruct",
    "moderation": "moderation",
    "image": "image",
    "speech": "tts",
    "transcription": "stt",
    "transcription_text": "stt",
    "translation": "stt",
}
for name, (fn, failures) in calls.items():
    for failure in failures:
        try:
            out[f"{name}-{failure}"] = fn(f"{routes[name]}-{failure}")
        except openai.APIError as e:
            out[f"{name}-{failure}"] = {"error": str(e)}

out["wav_len"] = len(WAV)
print(json.dumps(out))
