//! OpenAI's moderation, image and audio endpoints (Azure's deployments of
//! the last two as well): `POST /v1/moderations`, `/v1/images/generations`,
//! `/v1/audio/speech` and `/v1/audio/transcriptions|translations`.
//!
//! Answers are small and deterministic: moderation flags inputs containing
//! "kill" or "hate"; an image is a 1x1 PNG (`b64_json`, or a `data:` URL so
//! nothing ever points off the machine); speech is a few silent MPEG-1
//! Layer III frames, one per chunk, so a cut fault drops mid-body; a
//! transcription's text names the size of the file it received.

use std::borrow::Cow;
use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::openai::{to_bytes, unix_now};
use super::server::Ctx;
use super::stream::{Closing, StreamFormat};
use super::Shared;

/// The model a moderation request without one is answered by, as OpenAI's.
const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";

/// A 1x1 transparent PNG.
pub(crate) const TINY_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// Images per request, as OpenAI bounds `n`.
const MAX_IMAGES: u64 = 10;

/// One silent MPEG-1 Layer III frame: 128 kbit/s, 44.1 kHz, mono, no CRC
/// (144 * 128000 / 44100 = 417 bytes); all-zero side info decodes as silence.
pub(crate) const MP3_FRAME_LEN: usize = 417;
const MP3_HEADER: [u8; 4] = [0xFF, 0xFB, 0x90, 0xC4];

/// Form fields per upload, as the gateway bounds them.
const MAX_FORM_FIELDS: usize = 64;

const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

#[derive(Deserialize)]
struct ModerationRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Value>,
}

pub(crate) async fn moderations(ctx: &Ctx<'_>, body: &Bytes) -> Response<Body> {
    let req: ModerationRequest<'_> = match ctx.parse(None, body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let model = req.model.as_deref().unwrap_or(DEFAULT_MODERATION_MODEL);
    let Some(texts) = req.input.as_ref().and_then(moderation_texts) else {
        let message = "`input` must be a string, an array of strings or an array of content parts";
        return ctx.reject(
            Some(model),
            false,
            StatusCode::BAD_REQUEST,
            message,
            body.len(),
        );
    };
    let decision = match ctx.admit(model, false, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let index = decision.index;
    ctx.answer(decision, None::<SpeechFrames>, || {
        let results: Vec<Value> = texts.iter().map(|t| moderation_result(t)).collect();
        to_bytes(&json!({"id": format!("modr-sim-{index}"), "model": model, "results": results}))
    })
    .await
}

/// The texts to classify: a string, strings, or content parts (whose text
/// parts are read; an image part classifies as an empty text).
fn moderation_texts(input: &Value) -> Option<Vec<&str>> {
    match input {
        Value::String(s) => Some(vec![s]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(s.as_str()),
                Value::Object(part) => Some(part.get("text").and_then(Value::as_str).unwrap_or("")),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn moderation_result(text: &str) -> Value {
    let lower = text.to_lowercase();
    let violent = lower.contains("kill");
    let hateful = lower.contains("hate");
    let mut categories = serde_json::Map::new();
    let mut scores = serde_json::Map::new();
    let mut applied = serde_json::Map::new();
    for name in CATEGORIES {
        let hit = (violent && name == "violence") || (hateful && name == "hate");
        categories.insert(name.to_owned(), Value::Bool(hit));
        scores.insert(name.to_owned(), json!(if hit { 0.91 } else { 0.0001 }));
        applied.insert(name.to_owned(), json!(["text"]));
    }
    json!({
        "flagged": violent || hateful,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

#[derive(Deserialize)]
struct ImageRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default, borrow)]
    response_format: Option<Cow<'a, str>>,
}

pub(crate) async fn images(
    ctx: &Ctx<'_>,
    body: &Bytes,
    deployment: Option<&str>,
) -> Response<Body> {
    let req: ImageRequest<'_> = match ctx.parse(deployment, body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let model = deployment.or(req.model.as_deref()).unwrap_or("dall-e-3");
    let reject = |message: &str| {
        ctx.reject(
            Some(model),
            false,
            StatusCode::BAD_REQUEST,
            message,
            body.len(),
        )
    };
    let Some(prompt) = req.prompt.as_deref().filter(|p| !p.is_empty()) else {
        return reject("Missing required parameter: 'prompt'.");
    };
    let n = req.n.unwrap_or(1);
    if !(1..=MAX_IMAGES).contains(&n) {
        return reject("'n' must be between 1 and 10.");
    }
    // gpt-image models always answer base64.
    let b64 = model.starts_with("gpt-image") || req.response_format.as_deref() == Some("b64_json");
    if !matches!(
        req.response_format.as_deref(),
        None | Some("url" | "b64_json")
    ) {
        return reject("'response_format' must be 'url' or 'b64_json'.");
    }
    let decision = match ctx.admit(model, false, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let prompt = prompt.to_owned();
    ctx.answer(decision, None::<SpeechFrames>, || {
        let image = if b64 {
            json!({"b64_json": TINY_PNG_BASE64, "revised_prompt": prompt})
        } else {
            json!({"url": format!("data:image/png;base64,{TINY_PNG_BASE64}"), "revised_prompt": prompt})
        };
        let count = usize::try_from(n).unwrap_or(1);
        to_bytes(&json!({"created": unix_now(), "data": vec![image; count]}))
    })
    .await
}

#[derive(Deserialize)]
struct SpeechRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    voice: Option<Value>,
}

/// Text to speech. The body is always sent as a stream of frames (one per
/// content token), so it is logged and sampled as a stream: stream faults
/// apply (a drop cuts the body, an error event is OpenAI's error JSON in the
/// middle of the audio). Every `response_format` is answered as MP3.
pub(crate) async fn speech(
    ctx: &Ctx<'_>,
    body: &Bytes,
    deployment: Option<&str>,
) -> Response<Body> {
    let req: SpeechRequest<'_> = match ctx.parse(deployment, body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let Some(model) = deployment.or(req.model.as_deref()) else {
        let message = "Missing required parameter: 'model'.";
        return ctx.reject(None, true, StatusCode::BAD_REQUEST, message, body.len());
    };
    if req.input.as_deref().is_none_or(str::is_empty) || req.voice.is_none() {
        let message = "'input' and 'voice' are required.";
        return ctx.reject(
            Some(model),
            true,
            StatusCode::BAD_REQUEST,
            message,
            body.len(),
        );
    }
    let decision = match ctx.admit(model, true, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let frames = SpeechFrames {
        frames: decision.tokens,
    };
    ctx.answer(decision, Some(frames), Bytes::new).await
}

/// One silent MP3 frame.
pub(crate) fn mp3_frame() -> Bytes {
    let mut frame = vec![0u8; MP3_FRAME_LEN];
    frame[..4].copy_from_slice(&MP3_HEADER);
    Bytes::from(frame)
}

/// A binary body: one MP3 frame per chunk, nothing before or after.
pub(crate) struct SpeechFrames {
    frames: u32,
}

impl StreamFormat for SpeechFrames {
    fn chunks(&self) -> u32 {
        self.frames
    }

    fn preamble(&mut self, _step: usize) -> Option<Bytes> {
        None
    }

    fn content(&mut self, _n: u32, _finishing: bool) -> Bytes {
        mp3_frame()
    }

    fn closing(&mut self, _step: usize, _sent: u32) -> Option<Closing> {
        None
    }

    fn error_event(&mut self, shared: &Shared) -> Bytes {
        let message = format!("simulated overload from {}", shared.name);
        super::openai::error_body(&message, "overloaded_error", Some("overloaded"))
    }

    fn content_type(&self) -> &'static str {
        "audio/mpeg"
    }
}

/// The fields of an upload form the sim reads.
#[derive(Default)]
struct AudioForm {
    model: Option<String>,
    file_len: Option<usize>,
    /// Seconds of audio, if the file is a PCM WAV.
    duration: Option<f64>,
    response_format: Option<String>,
    language: Option<String>,
}

async fn read_form(content_type: &str, body: Bytes) -> Result<AudioForm, String> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = AudioForm::default();
    let mut fields = 0;
    while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
        fields += 1;
        if fields > MAX_FORM_FIELDS {
            return Err(format!("more than {MAX_FORM_FIELDS} form fields"));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let data = field.bytes().await.map_err(|e| e.to_string())?;
        let text = || String::from_utf8_lossy(&data).trim().to_owned();
        match name.as_str() {
            "file" => {
                form.file_len = Some(data.len());
                form.duration = wav_duration(&data);
            }
            "model" => form.model = Some(text()),
            "response_format" => form.response_format = Some(text()),
            "language" => form.language = Some(text()),
            _ => {}
        }
    }
    Ok(form)
}

/// The length of a PCM WAV in seconds: the byte rate is at offset 28 of
/// the canonical 44-byte header.
fn wav_duration(data: &[u8]) -> Option<f64> {
    if data.len() < 44 || &data[..4] != b"RIFF" || &data[8..12] != b"WAVE" {
        return None;
    }
    let byte_rate = u32::from_le_bytes(data[28..32].try_into().ok()?);
    (byte_rate > 0).then(|| (data.len() - 44) as f64 / f64::from(byte_rate))
}

/// Transcriptions, or translations when `translate`.
pub(crate) async fn transcribe(
    ctx: &Ctx<'_>,
    body: &Bytes,
    deployment: Option<&str>,
    translate: bool,
) -> Response<Body> {
    let content_type = ctx.header(&CONTENT_TYPE).unwrap_or_default();
    let reject = |model: Option<&str>, message: &str| {
        ctx.reject(model, false, StatusCode::BAD_REQUEST, message, body.len())
    };
    let form = match read_form(content_type, body.clone()).await {
        Ok(form) => form,
        Err(err) => return reject(deployment, &format!("invalid multipart form: {err}")),
    };
    let Some(model) = deployment.or(form.model.as_deref()) else {
        return reject(None, "Missing required parameter: 'model'.");
    };
    let Some(file_len) = form.file_len else {
        return reject(Some(model), "Missing required parameter: 'file'.");
    };
    let format = form.response_format.as_deref().unwrap_or("json");
    let Some(mime) = transcript_mime(format) else {
        return reject(
            Some(model),
            "'response_format' must be one of json, text, srt, verbose_json or vtt.",
        );
    };
    let decision = match ctx.admit(model, false, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let task = if translate { "translate" } else { "transcribe" };
    let text = format!("simulated {task} of {file_len} bytes");
    let duration = form.duration.unwrap_or(1.0);
    let language = if translate {
        "english".to_owned()
    } else {
        form.language.unwrap_or_else(|| "english".to_owned())
    };
    let format = format.to_owned();
    ctx.answer_as(decision, None::<SpeechFrames>, mime, || {
        transcript_body(&format, task, &text, &language, duration)
    })
    .await
}

fn transcript_mime(format: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_static(match format {
        "json" | "verbose_json" => "application/json",
        "text" | "srt" => "text/plain; charset=utf-8",
        "vtt" => "text/vtt; charset=utf-8",
        _ => return None,
    }))
}

fn transcript_body(format: &str, task: &str, text: &str, language: &str, duration: f64) -> Bytes {
    let end = timestamp(duration, ',');
    match format {
        "text" => Bytes::from(format!("{text}\n")),
        "srt" => Bytes::from(format!("1\n00:00:00,000 --> {end}\n{text}\n\n")),
        "vtt" => Bytes::from(format!(
            "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
            timestamp(duration, '.')
        )),
        "verbose_json" => to_bytes(&json!({
            "task": task,
            "language": language,
            "duration": duration,
            "text": text,
            "segments": [{
                "id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text,
                "tokens": [], "temperature": 0.0, "avg_logprob": -0.1,
                "compression_ratio": 1.0, "no_speech_prob": 0.01,
            }],
        })),
        _ => to_bytes(&json!({"text": text})),
    }
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT).
fn timestamp(seconds: f64, separator: char) -> String {
    let millis = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moderation_flags_violent_text_only() {
        let flagged = moderation_result("I will kill the process");
        assert_eq!(flagged["flagged"], true);
        assert_eq!(flagged["categories"]["violence"], true);
        assert_eq!(flagged["categories"]["hate"], false);
        assert_eq!(
            flagged["categories"].as_object().unwrap().len(),
            CATEGORIES.len()
        );
        assert_eq!(moderation_result("hello")["flagged"], false);
    }

    #[test]
    fn wav_duration_from_header() {
        // 16 kHz mono 16-bit: 32000 bytes per second; half a second of data.
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.resize(28, 0);
        wav.extend_from_slice(&32000u32.to_le_bytes());
        wav.resize(44 + 16000, 0);
        assert_eq!(wav_duration(&wav), Some(0.5));
        assert_eq!(wav_duration(b"not a wav"), None);
    }

    #[test]
    fn subtitles_have_timestamps() {
        assert_eq!(timestamp(61.5, ','), "00:01:01,500");
        let srt = transcript_body("srt", "transcribe", "hi", "english", 1.0);
        assert_eq!(&srt[..], b"1\n00:00:00,000 --> 00:00:01,000\nhi\n\n");
    }

    #[test]
    fn mp3_frames_start_with_a_frame_sync() {
        let frame = mp3_frame();
        assert_eq!(frame.len(), MP3_FRAME_LEN);
        assert_eq!(&frame[..2], &[0xFF, 0xFB]);
    }
}
