//! Multipart uploads (`POST /v1/audio/transcriptions` and
//! `/v1/audio/translations`): the form is parsed with `multer` to find the
//! `model` field the request is routed on, and rebuilt for each target with
//! that target's model. The body is held once in memory (bounded by
//! `max_request_body`), since failing over means sending it again; each
//! target's copy is built once per target group.

use super::{DecodeContext, InboundProtocol, InboundRequest};
use crate::api::Endpoint;
use crate::config::Target;
use crate::error::GatewayError;
use crate::providers::{self, StreamTranslator, Unsupported};
use crate::routing::{RequestForms, TargetRequest};
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue};
use std::convert::Infallible;

/// At most this many form fields: a transcription form has about six.
const MAX_FIELDS: usize = 64;

pub struct Multipart(pub Endpoint);

pub struct MultipartRequest {
    endpoint: Endpoint,
    boundary: String,
    fields: Vec<Field>,
    model: String,
    client_body: Bytes,
}

struct Field {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    data: Bytes,
}

impl InboundProtocol for Multipart {
    type Request = MultipartRequest;

    fn accepts(&self, content_type: Option<&str>) -> bool {
        content_type.is_some_and(|ct| ct.starts_with("multipart/form-data"))
    }

    async fn decode(
        &self,
        ctx: DecodeContext<'_>,
        body: Bytes,
    ) -> Result<MultipartRequest, GatewayError> {
        let content_type = ctx
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let boundary = multer::parse_boundary(content_type).map_err(invalid)?;
        let fields = parse(body.clone(), boundary.clone()).await?;
        let model = fields
            .iter()
            .find(|f| f.name == "model" && f.file_name.is_none())
            .and_then(|f| std::str::from_utf8(&f.data).ok())
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .ok_or(GatewayError::Body(crate::api::BodyError::MissingModel))?;
        if !fields.iter().any(|f| f.name == "file") {
            return Err(GatewayError::Multipart(
                "the form has no `file` field".into(),
            ));
        }
        if fields
            .iter()
            .any(|f| f.name == "stream" && f.data.trim_ascii() == b"true")
        {
            return Err(GatewayError::Multipart(
                "streamed transcriptions (`stream=true`) are not served by the gateway; omit `stream`".into(),
            ));
        }
        Ok(MultipartRequest {
            endpoint: self.0,
            boundary,
            fields,
            model,
            client_body: body,
        })
    }
}

fn invalid(e: multer::Error) -> GatewayError {
    GatewayError::Multipart(e.to_string())
}

async fn parse(body: Bytes, boundary: String) -> Result<Vec<Field>, GatewayError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await.map_err(invalid)? {
        if fields.len() == MAX_FIELDS {
            return Err(GatewayError::Multipart(format!(
                "the form has more than {MAX_FIELDS} fields"
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(invalid)?;
        fields.push(Field {
            name,
            file_name,
            content_type,
            data,
        });
    }
    Ok(fields)
}

impl MultipartRequest {
    /// The form with `model` set to `model`, same boundary, same order.
    fn encode(&self, model: &str) -> Bytes {
        let size: usize = self.fields.iter().map(|f| f.data.len() + 160).sum();
        let mut out = BytesMut::with_capacity(size + self.boundary.len() * 2 + 8);
        for field in &self.fields {
            out.put_slice(b"--");
            out.put_slice(self.boundary.as_bytes());
            out.put_slice(b"\r\nContent-Disposition: form-data; name=\"");
            out.put_slice(quoted(&field.name).as_bytes());
            out.put_slice(b"\"");
            if let Some(file_name) = &field.file_name {
                out.put_slice(b"; filename=\"");
                out.put_slice(quoted(file_name).as_bytes());
                out.put_slice(b"\"");
            }
            if let Some(content_type) = &field.content_type {
                out.put_slice(b"\r\nContent-Type: ");
                out.put_slice(content_type.as_bytes());
            }
            out.put_slice(b"\r\n\r\n");
            if field.name == "model" && field.file_name.is_none() {
                out.put_slice(model.as_bytes());
            } else {
                out.put_slice(&field.data);
            }
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"--");
        out.put_slice(self.boundary.as_bytes());
        out.put_slice(b"--\r\n");
        out.freeze()
    }
}

/// A name or file name as a quoted-string header parameter: backslash
/// escapes for `"` and `\\` (what `multer` and most servers unescape), line
/// breaks (which would end the header) replaced by spaces.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl RequestForms for MultipartRequest {
    fn stream(&self) -> bool {
        false
    }

    fn for_target(&self, target: &Target) -> Result<TargetRequest, Unsupported> {
        if target.endpoint_urls.get(self.endpoint).is_none() {
            let provider = providers::adapter(target.provider.kind).name();
            return Err(providers::not_offered(provider, self.endpoint));
        }
        let content_type = format!("multipart/form-data; boundary={}", self.boundary);
        Ok(TargetRequest {
            endpoint: self.endpoint,
            body: self.encode(&target.model),
            content_type: HeaderValue::try_from(content_type)
                .unwrap_or(HeaderValue::from_static("multipart/form-data")),
            tier_first_byte: None,
        })
    }

    fn stream_translator(&self, _target: &Target) -> Option<Box<dyn StreamTranslator>> {
        None
    }
}

impl InboundRequest for MultipartRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn client_body(&self) -> &Bytes {
        &self.client_body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(model: &str) -> (String, Bytes) {
        let boundary = "XyZ".to_owned();
        let body = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n\x00\x01\r\n\
             --XyZ--\r\n"
        );
        (boundary, Bytes::from(body))
    }

    #[tokio::test]
    async fn the_form_is_rebuilt_with_the_targets_model_and_the_same_file() {
        let (boundary, body) = form("whisper-route");
        let fields = parse(body.clone(), boundary.clone()).await.unwrap();
        let request = MultipartRequest {
            endpoint: Endpoint::AudioTranscriptions,
            boundary: boundary.clone(),
            fields,
            model: "whisper-route".into(),
            client_body: body,
        };
        let rebuilt = request.encode("whisper-1");
        let again = parse(rebuilt, boundary).await.unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].name, "model");
        assert_eq!(&again[0].data[..], b"whisper-1");
        assert_eq!(again[1].name, "file");
        assert_eq!(again[1].content_type.as_deref(), Some("audio/wav"));
        assert_eq!(&again[1].data[..], b"RIFF\r\n\x00\x01");
        assert_eq!(
            again[1].file_name.as_deref(),
            request.fields[1].file_name.as_deref()
        );
    }

    #[tokio::test]
    async fn a_broken_form_is_a_clear_error() {
        let err = parse(
            Bytes::from_static(b"--XyZ\r\nnot a header\r\n"),
            "XyZ".into(),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, GatewayError::Multipart(_)), "{err:?}");
    }
}
