//! The OpenAI wire format as the gateway needs it: reading the two fields it
//! routes on (`model`, `stream`) from a request body, rewriting `model` for a
//! target without touching any other byte, and the error body shape.
//! Pure functions over bytes: no I/O, no config.

pub mod anthropic;
pub mod path;
pub mod responses;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::ops::Range;

/// Which OpenAI endpoint an upstream request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    /// The Responses API, sent natively to targets that speak it.
    Responses,
    /// Legacy text completions.
    Completions,
    Moderations,
    ImageGenerations,
    /// Text to speech: a binary body, streamed through.
    AudioSpeech,
    /// Multipart uploads.
    AudioTranscriptions,
    AudioTranslations,
}

impl Endpoint {
    /// Every endpoint besides chat completions, which every provider serves
    /// (through translation) and whose URLs each provider builds itself.
    pub const OPENAI_ONLY: [Endpoint; 8] = [
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Completions,
        Endpoint::Moderations,
        Endpoint::ImageGenerations,
        Endpoint::AudioSpeech,
        Endpoint::AudioTranscriptions,
        Endpoint::AudioTranslations,
    ];

    /// The path under an OpenAI-style base URL (`…/v1`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Completions => "completions",
            Endpoint::Moderations => "moderations",
            Endpoint::ImageGenerations => "images/generations",
            Endpoint::AudioSpeech => "audio/speech",
            Endpoint::AudioTranscriptions => "audio/transcriptions",
            Endpoint::AudioTranslations => "audio/translations",
        }
    }

    /// A successful answer is a binary body passed through as it arrives
    /// rather than collected (it can be large, and it is not JSON).
    pub fn streams_binary(self) -> bool {
        self == Endpoint::AudioSpeech
    }

    /// Stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Responses => "responses",
            Endpoint::Completions => "completions",
            Endpoint::Moderations => "moderations",
            Endpoint::ImageGenerations => "image_generations",
            Endpoint::AudioSpeech => "audio_speech",
            Endpoint::AudioTranscriptions => "audio_transcriptions",
            Endpoint::AudioTranslations => "audio_translations",
        }
    }
}

/// A target's URL for each endpoint other than chat completions; `None`
/// where the provider does not offer it.
#[derive(Debug, Clone, Default)]
pub struct EndpointUrls {
    urls: [Option<http::Uri>; Endpoint::OPENAI_ONLY.len()],
}

impl EndpointUrls {
    fn slot(endpoint: Endpoint) -> Option<usize> {
        Endpoint::OPENAI_ONLY.iter().position(|e| *e == endpoint)
    }

    pub fn set(&mut self, endpoint: Endpoint, url: Option<http::Uri>) {
        if let Some(i) = Self::slot(endpoint) {
            self.urls[i] = url;
        }
    }

    pub fn get(&self, endpoint: Endpoint) -> Option<&http::Uri> {
        self.urls[Self::slot(endpoint)?].as_ref()
    }
}

/// A client request body with the routing fields located but not copied.
#[derive(Debug, Clone)]
pub struct InspectedBody {
    body: Bytes,
    model_span: Range<usize>,
    model: String,
    stream: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is empty; send a JSON object")]
    Empty,
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error("you must provide a model parameter")]
    MissingModel,
    #[error("'model' must be a string")]
    ModelNotString,
    #[error("'stream' must be a boolean")]
    StreamNotBool,
    #[error("'messages' must be an array")]
    MessagesNotArray,
    #[error("the request body nests arrays and objects deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The deepest nesting serde_json reads (its recursion limit is 128): a
/// body nested deeper could not be read into a `serde_json::Value` by an
/// adapter or a serde-based upstream.
pub const MAX_DEPTH: usize = 127;

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
}

impl InspectedBody {
    /// Validates that the body is one JSON object and locates `model` and
    /// `stream`. The rest of the document is checked for syntax only.
    pub fn parse(body: Bytes) -> Result<Self, BodyError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(BodyError::Empty);
        }
        let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first != Some(b'{') {
            // Still report syntax errors as such: "[1," is invalid JSON, not "not an object".
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    Err(e) => BodyError::InvalidJson(e.to_string()),
                    Ok(_) => BodyError::NotAnObject,
                },
            );
        }
        let peek: Peek<'_> =
            serde_json::from_slice(&body).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
        let raw_model = peek.model.ok_or(BodyError::MissingModel)?;
        if !raw_model.get().starts_with('"') {
            return Err(BodyError::ModelNotString);
        }
        // A string that does not decode (a lone surrogate escape) is bad JSON.
        let model: String = serde_json::from_str(raw_model.get())
            .map_err(|e| BodyError::InvalidJson(e.to_string()))?;
        if model.is_empty() {
            return Err(BodyError::MissingModel);
        }
        let stream = match peek.stream.map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(BodyError::StreamNotBool),
        };
        // Refused here rather than upstream: some upstreams accept it, and a
        // translating adapter would otherwise fail in a less helpful way.
        if peek.messages.is_some_and(|m| !m.get().starts_with('[')) {
            return Err(BodyError::MessagesNotArray);
        }
        // serde_json skips the fields it does not peek at without a depth
        // limit, so 100k nested brackets would otherwise be sent upstream.
        if nests_deeper_than(&body, MAX_DEPTH) {
            return Err(BodyError::TooDeep);
        }
        // RawValue borrows from `body`, so its offset locates the bytes to replace.
        let start = raw_model.get().as_ptr() as usize - body.as_ptr() as usize;
        let model_span = start..start + raw_model.get().len();
        Ok(InspectedBody {
            body,
            model_span,
            model,
            stream,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn stream(&self) -> bool {
        self.stream
    }

    /// The body as the client sent it.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// The body with `model` replaced by `model_json` (a JSON string literal);
    /// every other byte is the client's.
    pub fn with_model(&self, model_json: &[u8]) -> Bytes {
        let Range { start, end } = self.model_span;
        if &self.body[start..end] == model_json {
            return self.body.clone();
        }
        let mut out = BytesMut::with_capacity(self.body.len() - (end - start) + model_json.len());
        out.extend_from_slice(&self.body[..start]);
        out.extend_from_slice(model_json);
        out.extend_from_slice(&self.body[end..]);
        out.freeze()
    }
}

/// Whether valid JSON nests arrays and objects deeper than `max`. One pass
/// that jumps over strings (most of a chat body) with memchr.
fn nests_deeper_than(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut rest = json;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'"' => loop {
                let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                    return false;
                };
                let closing = rest.get(at) == Some(&b'"');
                // An escape covers the byte after the backslash.
                rest = rest
                    .get(at + if closing { 1 } else { 2 }..)
                    .unwrap_or_default();
                if closing {
                    break;
                }
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// `{"error":{"message","type","code"}}`, the shape OpenAI SDKs parse.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    let value = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code }
    });
    Bytes::from(value.to_string())
}

/// [`error_body`] with OpenAI's `param`: the request field at fault.
pub fn error_body_with_param(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Bytes {
    let value = serde_json::json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    Bytes::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<InspectedBody, BodyError> {
        InspectedBody::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn finds_model_and_stream() {
        let b = parse(r#"{"messages":[{"role":"user","content":"hi","model":"nested"}],"stream":true,"model":"chat-default"}"#).unwrap();
        assert_eq!(b.model(), "chat-default");
        assert!(b.stream());
        let b = parse(r#"{"model":"m"}"#).unwrap();
        assert!(!b.stream());
    }

    #[test]
    fn rewrite_touches_only_model() {
        let original = r#"{ "temperature" : 0.50, "model" : "chat-default" ,"messages":[{"content":"\u00e9 \"q\""}]}"#;
        let b = parse(original).unwrap();
        let out = b.with_model(br#""gpt-4o""#);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "temperature" : 0.50, "model" : "gpt-4o" ,"messages":[{"content":"\u00e9 \"q\""}]}"#
        );
        // Escaped model names are decoded for routing and replaced whole.
        let b = parse(r#"{"model":"chat\u002ddefault"}"#).unwrap();
        assert_eq!(b.model(), "chat-default");
        assert_eq!(&b.with_model(br#""x""#)[..], br#"{"model":"x"}"#);
    }

    #[test]
    fn malformed_inputs() {
        assert_eq!(parse("").unwrap_err(), BodyError::Empty);
        assert_eq!(parse("  \n").unwrap_err(), BodyError::Empty);
        assert!(matches!(
            parse("{\"model\":").unwrap_err(),
            BodyError::InvalidJson(_)
        ));
        assert!(matches!(
            parse("[1,").unwrap_err(),
            BodyError::InvalidJson(_)
        ));
        assert_eq!(parse("[1]").unwrap_err(), BodyError::NotAnObject);
        assert_eq!(parse("{}").unwrap_err(), BodyError::MissingModel);
        assert_eq!(
            parse(r#"{"model":""}"#).unwrap_err(),
            BodyError::MissingModel
        );
        assert_eq!(
            parse(r#"{"model":3}"#).unwrap_err(),
            BodyError::ModelNotString
        );
        assert!(matches!(
            parse(r#"{"model":"\ud800"}"#).unwrap_err(),
            BodyError::InvalidJson(_)
        ));
        assert_eq!(
            parse(r#"{"model":"m","stream":"yes"}"#).unwrap_err(),
            BodyError::StreamNotBool
        );
        for messages in ["5", "\"hi\"", "{}", "true"] {
            assert_eq!(
                parse(&format!(r#"{{"model":"m","messages":{messages}}}"#)).unwrap_err(),
                BodyError::MessagesNotArray,
                "{messages}"
            );
        }
        assert!(parse(r#"{"model":"m","messages":[]}"#).is_ok());
        let nested = |depth: usize| {
            format!(
                r#"{{"model":"m","x":{}"[{{\"]"{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        // As deep as serde_json reads into a Value, and no deeper.
        let deepest = nested(MAX_DEPTH);
        assert!(serde_json::from_str::<serde_json::Value>(&deepest).is_ok());
        assert!(parse(&deepest).is_ok());
        let too_deep = nested(MAX_DEPTH + 1);
        assert!(serde_json::from_str::<serde_json::Value>(&too_deep).is_err());
        assert_eq!(parse(&too_deep).unwrap_err(), BodyError::TooDeep);
        assert_eq!(
            parse(&format!(
                r#"{{"model":"m","x":{}}}"#,
                "[".repeat(100_000) + &"]".repeat(100_000)
            ))
            .unwrap_err(),
            BodyError::TooDeep
        );
        assert!(
            matches!(parse(r#"{"model":"a","model":"b"}"#).unwrap_err(), BodyError::InvalidJson(m) if m.contains("duplicate"))
        );
        assert!(matches!(
            InspectedBody::parse(Bytes::from_static(b"{\"model\":\"\xff\"}")).unwrap_err(),
            BodyError::InvalidJson(_)
        ));
    }

    #[test]
    fn error_body_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_body("bad \"x\"", "invalid_request_error", Some("c")))
                .unwrap();
        assert_eq!(v["error"]["message"], "bad \"x\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "c");
    }
}

/// Usage as the gateway writes it into chat completions and chunks it
/// translates from other providers: the one serialised usage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChatUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<CachedTokens>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<ReasoningTokens>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CachedTokens {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReasoningTokens {
    pub reasoning_tokens: u64,
}

impl ChatUsage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        ChatUsage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }
}

/// A `chat.completion.chunk` as every stream translator writes it; the
/// delta is each translator's own (what its provider can stream).
#[derive(Debug, Serialize)]
pub struct ChatChunk<'a, D> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: &'a [ChunkChoice<D>],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<ChatUsage>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice<D> {
    pub index: u32,
    pub delta: D,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

impl<'a, D> ChatChunk<'a, D> {
    pub fn new(
        id: &'a str,
        created: u64,
        model: &'a str,
        choices: &'a [ChunkChoice<D>],
        usage: Option<ChatUsage>,
    ) -> Self {
        ChatChunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices,
            usage,
        }
    }
}

impl<D> ChunkChoice<D> {
    /// The first (only) choice.
    pub fn first(delta: D, finish_reason: Option<&'static str>) -> Self {
        ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }
    }
}

/// Token usage as an OpenAI-compatible upstream reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// `input_tokens` in the Responses API.
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u64,
}

/// The top-level `usage` object of a response body or stream chunk, found
/// without parsing the whole document: OpenAI-compatible APIs put it last,
/// and a `"usage"` inside a string would be escaped (`\"usage\"`).
pub fn find_usage(json: &[u8]) -> Option<Usage> {
    let mut end = json.len();
    while let Some(at) = memchr::memmem::rfind(&json[..end], b"\"usage\"") {
        end = at;
        if at > 0 && json[at - 1] == b'\\' {
            continue;
        }
        let rest = json[at + 7..].trim_ascii_start().strip_prefix(b":")?;
        let mut de = serde_json::Deserializer::from_slice(rest);
        return <Option<Usage> as Deserialize>::deserialize(&mut de).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn finds_top_level_usage_and_ignores_quoted_text() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 999}"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#;
        assert_eq!(
            find_usage(body),
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 34
            })
        );
        let chunk = br#"{"choices":[],"usage": {"prompt_tokens":5,"completion_tokens":7}}"#;
        assert_eq!(
            find_usage(chunk),
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 7
            })
        );
        assert_eq!(find_usage(br#"{"usage":null}"#), None);
        assert_eq!(find_usage(br#"{"choices":[]}"#), None);
        assert_eq!(find_usage(br#"{"usage":"#), None);
        // Embeddings report prompt tokens only.
        assert_eq!(
            find_usage(br#"{"usage":{"prompt_tokens":3,"total_tokens":3}}"#),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 0
            })
        );
    }
}
