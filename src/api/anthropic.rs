//! Anthropic's Messages API as an inbound protocol (`POST /v1/messages`):
//! translation of Anthropic requests into OpenAI chat requests (the
//! gateway's canonical form) and of OpenAI responses, streams and errors
//! back into Anthropic's shapes.
// Placeholder signatures until the translation lands (being merged).

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InboundError {
    pub message: String,
}

pub fn request_to_openai(_anthropic: &[u8]) -> Result<Vec<u8>, InboundError> {
    Err(InboundError {
        message: "pending".into(),
    })
}
pub fn response_from_openai(_openai: &[u8]) -> Result<Vec<u8>, InboundError> {
    Err(InboundError {
        message: "pending".into(),
    })
}
pub struct ToAnthropicStream;
impl ToAnthropicStream {
    pub fn new(_model: &str) -> Self {
        ToAnthropicStream
    }
    pub fn translate(&mut self, _openai_event: &[u8], _out: &mut Vec<Bytes>) {}
}
pub fn error_from_openai(_status: u16, openai: &[u8]) -> Vec<u8> {
    openai.to_vec()
}
pub fn error_type_for_status(_status: u16) -> &'static str {
    "api_error"
}
