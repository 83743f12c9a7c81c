//! OpenAI's Responses API (`POST /v1/responses`, and the stored responses
//! under `/v1/responses/{id}`). Each target is reached natively (providers
//! with `responses = "native"`: the body passed through, `model` rewritten)
//! or translated to Chat Completions and back (`api::responses`). A
//! conversation continued with `previous_response_id` is expanded from the
//! gateway's own copy whenever the target is not the provider that holds
//! it, so a conversation survives failover to any provider. Every response
//! served is kept (unless `store: false`) in `conversations`, scoped to the
//! virtual key that created it.

use super::{DecodeContext, InboundProtocol, InboundRequest, RelayStream};
use crate::api::responses::{self as wire, Inexpressible, ResponseShell, ToResponsesStream};
use crate::api::{BodyError, Endpoint, InspectedBody};
use crate::config::Target;
use crate::conversations::Conversations;
use crate::error::GatewayError;
use crate::providers::{StreamTranslator, Unsupported};
use crate::routing::resume::SEAM_COMMENT;
use crate::routing::{OpenAiForm, RequestForms, TargetRequest};
use crate::server::AppState;
use crate::store::ResponseRow;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

pub struct Responses;

pub struct ResponsesRequest {
    client_body: Bytes,
    fields: Map<String, Value>,
    /// This request's own input items (a string input as one message).
    own_items: Arc<Vec<Value>>,
    history: History,
    /// The body as sent: for native targets that hold the previous
    /// response, or when there is none.
    as_sent: OpenAiForm,
    /// The body with the stored conversation spliced into `input`.
    expanded: OnceLock<Result<OpenAiForm, Inexpressible>>,
    /// The conversation as a chat completions body.
    chat: OnceLock<Result<OpenAiForm, Inexpressible>>,
    shell: ResponseShell,
    saver: Option<Saver>,
}

/// The conversation `previous_response_id` names.
enum History {
    None,
    Stored {
        row: Arc<ResponseRow>,
        items: Arc<Vec<Value>>,
    },
    /// The gateway keeps no responses (`[responses] store = false`): only
    /// native targets, whose upstream may hold it, can try it.
    Unknown,
}

/// Where and for whom a served response is kept.
#[derive(Clone)]
struct Saver {
    conversations: Arc<Conversations>,
    owner: String,
    history: Arc<Vec<Value>>,
    own_items: Arc<Vec<Value>>,
}

/// The owner of stored responses: the virtual key's id (stable across
/// rotations), or nobody in particular with `auth = "none"`.
fn owner_of(key: Option<&crate::keys::KeyInfo>) -> String {
    key.map(|k| k.id.to_string()).unwrap_or_default()
}

impl InboundProtocol for Responses {
    type Request = ResponsesRequest;

    async fn decode(
        &self,
        ctx: DecodeContext<'_>,
        body: Bytes,
    ) -> Result<ResponsesRequest, GatewayError> {
        let inspected = InspectedBody::parse(body.clone())?;
        let fields: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|e| GatewayError::Body(BodyError::InvalidJson(e.to_string())))?;
        let own_items = wire::input_items(fields.get("input").unwrap_or(&Value::Null)).ok_or(
            GatewayError::InvalidField {
                param: "input",
                message: "'input' must be a string or an array of input items".into(),
            },
        )?;
        let conversations = ctx.state.conversations.get();
        let owner = owner_of(ctx.key);
        let history = match fields.get("previous_response_id") {
            None | Some(Value::Null) => History::None,
            Some(Value::String(id)) => load_history(conversations, id, &owner).await?,
            Some(_) => {
                return Err(GatewayError::InvalidField {
                    param: "previous_response_id",
                    message: "'previous_response_id' must be a string".into(),
                })
            }
        };
        let keep = fields.get("store") != Some(&Value::Bool(false));
        let own_items = Arc::new(own_items);
        let history_items = match &history {
            History::Stored { items, .. } => items.clone(),
            _ => Arc::default(),
        };
        let saver = conversations.filter(|_| keep).map(|c| Saver {
            conversations: c.clone(),
            owner,
            history: history_items,
            own_items: own_items.clone(),
        });
        Ok(ResponsesRequest {
            client_body: body,
            shell: ResponseShell::new(&fields),
            fields,
            own_items,
            history,
            as_sent: OpenAiForm {
                endpoint: Endpoint::Responses,
                body: inspected,
            },
            expanded: OnceLock::new(),
            chat: OnceLock::new(),
            saver,
        })
    }
}

async fn load_history(
    conversations: Option<&Arc<Conversations>>,
    id: &str,
    owner: &str,
) -> Result<History, GatewayError> {
    let Some(conversations) = conversations else {
        return Ok(History::Unknown);
    };
    let now = crate::telemetry::request_log::now_ms();
    match conversations.load(id, owner, now).await {
        Ok(Some(row)) => {
            let items = serde_json::from_str(&row.conversation).unwrap_or_default();
            Ok(History::Stored {
                row,
                items: Arc::new(items),
            })
        }
        // Another key's response, expired, deleted or never stored: as
        // OpenAI answers. Passing the id through instead would let one
        // virtual key continue another's conversation on a shared upstream.
        Ok(None) => Err(GatewayError::ResponseNotFound {
            id: id.chars().take(200).collect(),
            previous: true,
        }),
        Err(e) => Err(GatewayError::ResponseStore(e.to_string())),
    }
}

impl ResponsesRequest {
    fn serves_natively(target: &Target) -> bool {
        target.provider.responses_native
    }

    /// The conversation to send a target that does not hold it.
    fn conversation(&self) -> Result<Vec<Value>, Inexpressible> {
        match &self.history {
            History::None => Ok(self.own_items.to_vec()),
            History::Stored { items, .. } => {
                Ok(items.iter().chain(self.own_items.iter()).cloned().collect())
            }
            History::Unknown => Err(Inexpressible {
                field: "previous_response_id".into(),
                reason: "the gateway keeps no responses (`[responses] store = false`): only a provider that offers the Responses API natively can continue one".into(),
            }),
        }
    }

    fn expanded(&self) -> &Result<OpenAiForm, Inexpressible> {
        self.expanded.get_or_init(|| {
            let mut fields = self.fields.clone();
            fields.remove("previous_response_id");
            fields.insert("input".into(), Value::Array(self.conversation()?));
            form(Endpoint::Responses, &Value::Object(fields))
        })
    }

    fn chat(&self) -> &Result<OpenAiForm, Inexpressible> {
        self.chat.get_or_init(|| {
            let chat = wire::to_chat(&self.fields, &self.conversation()?)?;
            form(Endpoint::ChatCompletions, &chat)
        })
    }

    /// The native form `target` takes: the body as sent when its provider
    /// holds the previous response (or there is none), else expanded.
    fn native_form(&self, target: &Target) -> Result<&OpenAiForm, Inexpressible> {
        match &self.history {
            History::Stored { row, .. }
                if !(row.upstream_holds && row.provider == target.provider.name) =>
            {
                self.expanded().as_ref().map_err(Clone::clone)
            }
            _ => Ok(&self.as_sent),
        }
    }

    fn form_for(&self, target: &Target) -> Result<&OpenAiForm, Inexpressible> {
        if Self::serves_natively(target) {
            self.native_form(target)
        } else {
            self.chat().as_ref().map_err(Clone::clone)
        }
    }

    fn save(&self, served_by: &ServedBy, response: &Value) {
        if let Some(saver) = &self.saver {
            saver.save(served_by, response);
        }
    }
}

fn form(endpoint: Endpoint, body: &Value) -> Result<OpenAiForm, Inexpressible> {
    let body = InspectedBody::parse(Bytes::from(body.to_string())).map_err(|e| Inexpressible {
        field: "(body)".into(),
        reason: e.to_string(),
    })?;
    Ok(OpenAiForm { endpoint, body })
}

/// The provider that answered, and whether natively.
struct ServedBy {
    provider: String,
    native: bool,
}

impl ServedBy {
    fn new(target: &Target) -> Self {
        ServedBy {
            provider: target.provider.name.clone(),
            native: ResponsesRequest::serves_natively(target),
        }
    }
}

impl Saver {
    fn save(&self, served_by: &ServedBy, response: &Value) {
        let Some(id) = response["id"].as_str() else {
            return;
        };
        let output = response["output"].as_array().map_or(&[][..], Vec::as_slice);
        let conversation: Vec<Value> = self
            .history
            .iter()
            .cloned()
            .chain(wire::replayable(&self.own_items))
            .chain(wire::replayable(output))
            .collect();
        let now = crate::telemetry::request_log::now_ms();
        let retention =
            i64::try_from(self.conversations.retention().as_millis()).unwrap_or(i64::MAX);
        self.conversations.save(ResponseRow {
            id: id.to_owned(),
            owner: self.owner.clone(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(retention),
            provider: served_by.provider.clone(),
            // A native upstream kept it too, unless the client said not to
            // (then no saver exists at all).
            upstream_holds: served_by.native,
            input_items: Value::Array(with_ids(&self.own_items)).to_string(),
            conversation: Value::Array(conversation).to_string(),
            response: response.to_string(),
        });
    }
}

/// Input items as `input_items` lists them: each with an id.
fn with_ids(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if let Some(fields) = item.as_object_mut() {
                fields
                    .entry("type")
                    .or_insert_with(|| Value::String("message".into()));
                fields
                    .entry("id")
                    .or_insert_with(|| Value::String(wire::new_id("msg")));
            }
            item
        })
        .collect()
}

impl RequestForms for ResponsesRequest {
    fn stream(&self) -> bool {
        self.as_sent.stream()
    }

    fn for_target(&self, target: &Target) -> Result<TargetRequest, Unsupported> {
        let form = self.form_for(target).map_err(|e| Unsupported {
            provider: crate::providers::adapter(target.provider.kind).name(),
            field: e.field,
            reason: e.reason,
        })?;
        form.for_target(target)
    }

    fn stream_translator(&self, target: &Target) -> Option<Box<dyn StreamTranslator>> {
        self.form_for(target).ok()?.stream_translator(target)
    }

    /// The conversation as a chat body: a stream served from chat chunks
    /// (a translated target) is continued from it like a chat stream, and
    /// the continuation's chunks reach the client through the same
    /// `ToResponsesStream`, so its event sequence stays one response.
    fn continuation_base(&self) -> Option<InspectedBody> {
        if !self.stream() {
            return None;
        }
        self.chat().as_ref().ok().map(|form| form.body.clone())
    }
}

impl InboundRequest for ResponsesRequest {
    fn model(&self) -> &str {
        self.as_sent.body.model()
    }

    fn client_body(&self) -> &Bytes {
        &self.client_body
    }

    fn max_tokens(&self) -> Option<u32> {
        super::requested_max_tokens(self.as_sent.body.bytes())
    }

    /// Only answers the gateway keeps nothing of: a cached answer must not
    /// stand for a response stored under another request.
    fn cache_class(&self) -> crate::server::cache::CacheClass {
        use crate::server::cache::CacheClass;
        let not_kept =
            self.saver.is_none() && self.fields.get("store") == Some(&Value::Bool(false));
        if not_kept {
            CacheClass::Generation
        } else {
            CacheClass::Never
        }
    }

    fn encode_complete(
        &mut self,
        served_by: &Target,
        status: StatusCode,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        if !status.is_success() {
            return (status, body);
        }
        if Self::serves_natively(served_by) {
            if self.saver.is_some() {
                if let Ok(response) = serde_json::from_slice::<Value>(&body) {
                    self.save(&ServedBy::new(served_by), &response);
                }
            }
            return (status, body);
        }
        match wire::from_chat_completion(&body, &self.shell) {
            Ok(response) => {
                self.save(&ServedBy::new(served_by), &response);
                (status, Bytes::from(response.to_string()))
            }
            Err(message) => (
                StatusCode::BAD_GATEWAY,
                crate::api::error_body(&message, "upstream_error", Some("unreadable_answer")),
            ),
        }
    }

    fn encode_stream(self, served_by: &Target, events: RelayStream) -> Body {
        let mut served_by = ServedBy::new(served_by);
        if served_by.native {
            return Body::from_stream(events.map(move |event| {
                let Ok(bytes) = &event else { return event };
                if bytes.starts_with(SEAM_COMMENT.as_bytes()) {
                    // Continued on another target: the upstream holds only
                    // the part it streamed, so the next turn is expanded
                    // from the gateway's copy.
                    served_by.native = false;
                }
                if self.saver.is_some() {
                    if let Some(response) = wire::native::finished_response(bytes) {
                        self.save(&served_by, &response);
                    }
                }
                event
            }));
        }
        let model = self.model().to_owned();
        let mut translator = ToResponsesStream::new(self.shell.clone(), &model);
        let mut saved = false;
        Body::from_stream(events.flat_map(move |event| {
            let Ok(event) = event;
            let mut out = Vec::new();
            translator.translate(&event, &mut out);
            if let (false, Some(response)) = (saved, translator.finished_response()) {
                saved = true;
                self.save(&served_by, response);
            }
            futures_util::stream::iter(out.into_iter().map(Ok::<_, std::convert::Infallible>))
        }))
    }
}

/// `GET|DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`,
/// answered from the gateway's store for the key that created them.
pub struct ResponsesStored;

impl ResponsesStored {
    pub async fn get(state: &AppState, id: &str, headers: &HeaderMap) -> Response {
        match Self::row(state, id, headers).await {
            Ok(row) => json_response(StatusCode::OK, row.response.clone()),
            Err(e) => e.openai_response(),
        }
    }

    pub async fn input_items(
        state: &AppState,
        id: &str,
        headers: &HeaderMap,
        uri: &http::Uri,
    ) -> Response {
        let page = match ItemsPage::from_query(uri.query().unwrap_or_default()) {
            Ok(page) => page,
            Err(e) => return e.openai_response(),
        };
        match Self::row(state, id, headers).await {
            Ok(row) => {
                let items: Vec<Value> = serde_json::from_str(&row.input_items).unwrap_or_default();
                json_response(StatusCode::OK, page.list(items).to_string())
            }
            Err(e) => e.openai_response(),
        }
    }

    pub async fn delete(state: &AppState, id: &str, headers: &HeaderMap) -> Response {
        let deleted = async {
            let (conversations, owner) = Self::scope(state, id, headers).await?;
            conversations
                .delete(id, &owner)
                .await
                .map_err(|e| GatewayError::ResponseStore(e.to_string()))
        };
        match deleted.await {
            Ok(true) => json_response(
                StatusCode::OK,
                serde_json::json!({"id": id, "object": "response", "deleted": true}).to_string(),
            ),
            Ok(false) => not_found(id).openai_response(),
            Err(e) => e.openai_response(),
        }
    }

    /// The store and the caller's owner id, after authenticating the key.
    async fn scope<'s>(
        state: &'s AppState,
        id: &str,
        headers: &HeaderMap,
    ) -> Result<(&'s Arc<Conversations>, String), GatewayError> {
        let key = crate::server::proxy::caller_key(state, headers, None).await?;
        let conversations = state.conversations.get().ok_or_else(|| not_found(id))?;
        Ok((conversations, owner_of(key.as_deref())))
    }

    async fn row(
        state: &AppState,
        id: &str,
        headers: &HeaderMap,
    ) -> Result<Arc<ResponseRow>, GatewayError> {
        let (conversations, owner) = Self::scope(state, id, headers).await?;
        let now = crate::telemetry::request_log::now_ms();
        conversations
            .load(id, &owner, now)
            .await
            .map_err(|e| GatewayError::ResponseStore(e.to_string()))?
            .ok_or_else(|| not_found(id))
    }
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::ResponseNotFound {
        id: id.chars().take(200).collect(),
        previous: false,
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `limit`, `order` and `after` of an `input_items` listing, as OpenAI
/// takes them (newest first unless `order=asc`).
#[derive(Debug, PartialEq)]
struct ItemsPage {
    limit: usize,
    ascending: bool,
    after: Option<String>,
}

impl ItemsPage {
    fn from_query(query: &str) -> Result<Self, GatewayError> {
        let mut page = ItemsPage {
            limit: 20,
            ascending: false,
            after: None,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "limit" => {
                    page.limit = value.parse().ok().filter(|l| (1..=100).contains(l)).ok_or(
                        GatewayError::InvalidField {
                            param: "limit",
                            message: "'limit' must be an integer from 1 to 100".into(),
                        },
                    )?
                }
                "order" => {
                    page.ascending = match value.as_ref() {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(GatewayError::InvalidField {
                                param: "order",
                                message: "'order' must be `asc` or `desc`".into(),
                            })
                        }
                    }
                }
                "after" => page.after = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(page)
    }

    fn list(&self, mut items: Vec<Value>) -> Value {
        if !self.ascending {
            items.reverse();
        }
        let start = self
            .after
            .as_ref()
            .and_then(|after| items.iter().position(|i| i["id"] == after.as_str()))
            .map_or(0, |at| at + 1);
        let rest = items.len().saturating_sub(start);
        let data: Vec<Value> = items.into_iter().skip(start).take(self.limit).collect();
        serde_json::json!({
            "object": "list",
            "first_id": data.first().map(|i| i["id"].clone()),
            "last_id": data.last().map(|i| i["id"].clone()),
            "has_more": rest > data.len(),
            "data": data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_items_are_paged_like_openai() {
        let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("msg_{i}")})).collect();
        let page = ItemsPage::from_query("limit=2&after=msg_3").unwrap();
        let listed = page.list(items.clone());
        assert_eq!(listed["data"], json!([{"id": "msg_2"}, {"id": "msg_1"}]));
        assert_eq!(listed["has_more"], true);
        assert_eq!(listed["first_id"], "msg_2");
        let asc = ItemsPage::from_query("order=asc").unwrap().list(items);
        assert_eq!(asc["data"][0]["id"], "msg_0");
        assert_eq!(asc["has_more"], false);
        assert!(ItemsPage::from_query("limit=0").is_err());
        assert!(ItemsPage::from_query("order=sideways").is_err());
    }

    #[test]
    fn listed_input_items_get_ids() {
        let items = with_ids(&[
            json!({"role": "user", "content": "hi"}),
            json!({"type": "function_call_output", "id": "x"}),
        ]);
        assert_eq!(items[0]["type"], "message");
        assert!(items[0]["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(items[1]["id"], "x");
    }
}
