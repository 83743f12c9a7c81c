//! PLACEHOLDER while the Responses translation lands.
use super::{DecodeContext, InboundProtocol};
use crate::error::GatewayError;
use crate::server::AppState;
use axum::response::Response;
use bytes::Bytes;

pub struct Responses;
pub struct ResponsesStored;
impl InboundProtocol for Responses {
    type Request = super::openai::JsonRequest;
    async fn decode(
        &self,
        _ctx: DecodeContext<'_>,
        _body: Bytes,
    ) -> Result<Self::Request, GatewayError> {
        Err(GatewayError::NotFound {
            path: "/v1/responses".into(),
        })
    }
}
impl ResponsesStored {
    pub async fn get(_s: &AppState, _id: &str, _h: &http::HeaderMap) -> Response {
        GatewayError::NotFound { path: "x".into() }.openai_response()
    }
    pub async fn input_items(
        _s: &AppState,
        _id: &str,
        _h: &http::HeaderMap,
        _u: &http::Uri,
    ) -> Response {
        GatewayError::NotFound { path: "x".into() }.openai_response()
    }
    pub async fn delete(_s: &AppState, _id: &str, _h: &http::HeaderMap) -> Response {
        GatewayError::NotFound { path: "x".into() }.openai_response()
    }
}
