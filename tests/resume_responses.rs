//! Stream continuation on the Responses API (`POST /v1/responses`): a
//! stream served from chat chunks (a target with `responses = "chat"`, or
//! an Anthropic one) that breaks after content is continued on the route's
//! next target, and the client reads one valid Responses event sequence;
//! the simulators' logs show what each target received.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard::sim::{FaultAction, SimEndpoint, SimHandle};

/// A target: its provider kind, its `responses` mode (`None`: the kind's
/// default) and its simulator.
type TargetSpec<'a> = (&'a str, Option<&'a str>, &'a SimHandle);

/// A route `chat` over `targets`, with `route_extra` route settings.
fn config(targets: &[TargetSpec<'_>], route_extra: &str) -> String {
    let mut text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n");
    let mut list = Vec::new();
    for (i, (kind, responses, sim)) in targets.iter().enumerate() {
        let (url, model) = match *kind {
            "anthropic" => (sim.origin(), "claude-sonnet-4-5"),
            _ => (sim.base_url(), "gpt-4o"),
        };
        let mode = responses.map_or(String::new(), |m| format!("responses = \"{m}\"\n"));
        text.push_str(&format!(
            "[providers.t{i}]\nkind = \"{kind}\"\nbase_url = \"{url}\"\napi_key_env = \"KEY\"\n{mode}"
        ));
        list.push(format!("{{ provider = \"t{i}\", model = \"{model}\" }}"));
    }
    text.push_str(&format!(
        "[routes.chat]\n{route_extra}\ntargets = [{}]\n",
        list.join(", ")
    ));
    text
}

/// A gateway over `targets` that keeps no responses (the store would be a
/// file in the working directory).
async fn gateway_for(targets: &[TargetSpec<'_>], route_extra: &str) -> switchyard::server::Gateway {
    let text = format!(
        "{}[responses]\nstore = false\n",
        config(targets, route_extra)
    );
    gateway_with_env(&text, |_| Some("test-key".into())).await
}

async fn responses_stream(gw: &switchyard::server::Gateway) -> Vec<Value> {
    let body = json!({"model": "chat", "stream": true, "input": "count"});
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/responses", gw.base_url()),
        body.to_string(),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    sse_data(&reply.body)
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}")))
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

/// The numbering OpenAI's SDKs rely on: every event numbered, strictly
/// increasing, from 0 without a gap.
fn assert_numbered(events: &[Value]) {
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| {
            e["sequence_number"]
                .as_u64()
                .unwrap_or_else(|| panic!("unnumbered: {e}"))
        })
        .collect();
    let expected: Vec<u64> = (0..numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "{:?}", types(events));
}

/// One response across the seam: one of each opening and closing event,
/// the whole text in the deltas, in `output_text.done` and in the final
/// response; returns the final response.
fn assert_one_complete_response(events: &[Value], expected: &str) -> Value {
    assert_numbered(events);
    let kinds = types(events);
    let count = |t: &str| kinds.iter().filter(|k| **k == t).count();
    for once in [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ] {
        assert_eq!(count(once), 1, "{once} in {kinds:?}");
    }
    assert_eq!(count("error") + count("response.failed"), 0, "{kinds:?}");
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let deltas: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .collect();
    let text: String = deltas.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(text, expected);
    let items: std::collections::HashSet<_> = deltas.iter().map(|e| e["item_id"].clone()).collect();
    assert_eq!(items.len(), 1, "one output item: {items:?}");
    let done = events
        .iter()
        .find(|e| e["type"] == "response.output_text.done")
        .unwrap();
    assert_eq!(done["text"], expected);
    let created_id = &events[0]["response"]["id"];
    let completed = events.last().unwrap()["response"].clone();
    assert_eq!(&completed["id"], created_id, "one response id");
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["content"][0]["text"], expected);
    completed
}

#[tokio::test]
async fn a_translated_responses_stream_is_continued_by_prefill() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let claude = sim60("claude", |_| {}).await;
    let gw = gateway_for(
        &[
            ("openai", Some("chat"), &primary),
            ("anthropic", None, &claude),
        ],
        "",
    )
    .await;
    let events = responses_stream(&gw).await;
    let completed = assert_one_complete_response(&events, &answer(TOKENS));
    assert_eq!(
        completed["usage"]["output_tokens"], TOKENS,
        "usage covers the whole answer: {completed}"
    );
    // The primary was asked in chat form; the fallback got the same
    // conversation with the partial answer as its prefill.
    assert!(primary.last_json(SimEndpoint::OpenAiChat).is_some());
    let sent = claude.last_json(SimEndpoint::AnthropicMessages).unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert!(messages[0].to_string().contains("count"), "{sent}");
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["content"][0]["text"], answer(40).trim_end(), "{last}");
    assert_eq!(
        continuation_of(&claude),
        [Some("prefill from tok39".into())]
    );
    assert_eq!(gw.counters().streams_cut, 0);
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_streams_resumed_total{")
                && l.contains("outcome=\"completed\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_translated_responses_stream_is_continued_by_instruction_with_overlap() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::ErrorEventAfter(40).into()]);
    let fallback = sim60("fallback", |b| b.continue_overlap = 3).await;
    let gw = gateway_for(
        &[
            ("openai", Some("chat"), &primary),
            ("openai", Some("chat"), &fallback),
        ],
        "",
    )
    .await;
    let events = responses_stream(&gw).await;
    let completed = assert_one_complete_response(&events, &answer(TOKENS));
    assert_eq!(completed["usage"]["output_tokens"], TOKENS, "{completed}");
    let sent = fallback.last_json(SimEndpoint::OpenAiChat).unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{sent}");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], answer(40));
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(
        continuation_of(&fallback),
        [Some("instruct from tok37".into())],
        "the fallback repeated three tokens; the client saw them once"
    );
}

#[tokio::test]
async fn a_responses_stream_nobody_can_continue_fails_naming_the_original_cut() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let refuses = sim60("refuses", |b| b.reject_prefill = true).await;
    let gw = gateway_for(
        &[
            ("openai", Some("chat"), &primary),
            ("anthropic", None, &refuses),
        ],
        "",
    )
    .await;
    let events = responses_stream(&gw).await;
    assert_numbered(&events);
    let kinds = types(&events);
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["response.failed", "error"],
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "response.completed").count(),
        0
    );
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(text, answer(40));
    let error = events.last().unwrap();
    assert_eq!(error["error"]["code"], "stream_cut", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("connection lost"), "{message}");
    assert!(
        !message.contains("400") && !message.contains("prefill"),
        "{message}"
    );
    assert_eq!(continuation_of(&refuses), [Some("prefill rejected".into())]);
    assert_eq!(gw.counters().streams_cut, 1);
}

#[tokio::test]
async fn resume_off_keeps_the_responses_cut() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let fallback = sim60("fallback", |_| {}).await;
    let gw = gateway_for(
        &[
            ("openai", Some("chat"), &primary),
            ("openai", Some("chat"), &fallback),
        ],
        "resume = \"off\"",
    )
    .await;
    let events = responses_stream(&gw).await;
    let kinds = types(&events);
    assert_eq!(kinds.last(), Some(&"error"), "{kinds:?}");
    assert_eq!(fallback.stats().requests, 0);
}

/// Through the official OpenAI SDK (`responses.stream` and
/// `responses.create(stream=True)`), each stream cut after 40 of 60 tokens
/// and continued on the fallback: the SDK reads one complete response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_reads_a_continued_responses_stream() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([
        FaultAction::DropAfter(40).into(),
        FaultAction::DropAfter(40).into(),
    ]);
    let fallback = sim60("fallback", |b| b.continue_overlap = 3).await;
    let gw = gateway_for(
        &[
            ("openai", Some("chat"), &primary),
            ("openai", Some("chat"), &fallback),
        ],
        "",
    )
    .await;
    let v = run_python_client("continued_responses_client", gw.base_url()).await;
    let full = answer(TOKENS);
    for way in ["stream", "create"] {
        let seen = &v[way];
        assert_eq!(seen["deltas"], full.as_str(), "{way}: {v}");
        assert_eq!(seen["done_text"], full.as_str(), "{way}: {v}");
        assert_eq!(seen["final_text"], full.as_str(), "{way}: {v}");
        assert_eq!(seen["status"], "completed", "{way}: {v}");
        assert_eq!(seen["numbered_in_order"], true, "{way}: {v}");
        assert_eq!(seen["completed"], 1, "{way}: {v}");
        assert_eq!(seen["created"], 1, "{way}: {v}");
        assert_eq!(seen["output_tokens"], TOKENS, "{way}: {v}");
    }
    let continued = continuation_of(&fallback);
    assert_eq!(continued.len(), 2, "both streams continued: {continued:?}");
    assert!(continued.iter().all(Option::is_some), "{continued:?}");
}

/// A native Responses stream (the upstream serves `/v1/responses` itself)
/// cut after 40 of 60 tokens is carried on by a chat continuation: the
/// client reads the upstream's own response, item and numbering going on.
#[tokio::test]
async fn a_native_responses_stream_is_continued_in_its_own_numbering() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let claude = sim60("claude", |_| {}).await;
    let gw = gateway_for(
        &[("openai", None, &primary), ("anthropic", None, &claude)],
        "",
    )
    .await;
    let events = responses_stream(&gw).await;
    let completed = assert_one_complete_response(&events, &answer(TOKENS));
    assert_eq!(completed["usage"]["output_tokens"], TOKENS, "{completed}");
    // The upstream's own ids: its response.created and its message item.
    let native = primary.last_json(SimEndpoint::OpenAiResponses);
    assert!(native.is_some(), "the primary was asked natively");
    assert_eq!(completed["model"], events[0]["response"]["model"]);
    let added = events
        .iter()
        .find(|e| e["type"] == "response.output_item.added")
        .unwrap();
    assert_eq!(completed["output"][0]["id"], added["item"]["id"]);
    let sent = claude.last_json(SimEndpoint::AnthropicMessages).unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["content"][0]["text"], answer(40).trim_end(), "{last}");
    assert_eq!(
        continuation_of(&claude),
        [Some("prefill from tok39".into())]
    );
    assert_eq!(gw.counters().streams_cut, 0);
}

/// A native stream cut inside a tool call is not continued: it ends with
/// the upstream dialect's cut, numbered on.
#[tokio::test]
async fn a_native_responses_tool_call_cut_is_not_continued() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(2).into()]);
    let fallback = sim60("fallback", |_| {}).await;
    let gw = gateway_for(
        &[("openai", None, &primary), ("openai", None, &fallback)],
        "",
    )
    .await;
    let body = json!({"model": "chat", "stream": true, "input": "weather?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]});
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/responses", gw.base_url()),
        body.to_string(),
        &[],
    )
    .await;
    let events: Vec<Value> = sse_data(&reply.body)
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    assert_numbered(&events);
    let kinds = types(&events);
    assert!(
        kinds.contains(&"response.function_call_arguments.delta"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"error"), "{kinds:?}");
    assert_eq!(events.last().unwrap()["error"]["code"], "stream_cut");
    assert_eq!(fallback.stats().requests, 0, "tool calls are not continued");
}

/// The next turn after a continued native stream: the native upstream
/// holds only the part it streamed, so the gateway sends it the stored
/// conversation instead of the `previous_response_id`.
#[tokio::test]
async fn after_a_continued_native_stream_the_next_turn_is_expanded() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let claude = sim60("claude", |_| {}).await;
    let dir = std::env::temp_dir().join(format!("switchyard-resume-resp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!(
        "[store]\nurl = \"sqlite://{}\"\n",
        dir.join("store.db").display()
    );
    let text = config(
        &[("openai", None, &primary), ("anthropic", None, &claude)],
        "",
    )
    .replacen("[providers.", &format!("{store}[providers."), 1);
    let gw = gateway_with_env(&text, |_| Some("test-key".into())).await;
    let events = responses_stream(&gw).await;
    let completed = assert_one_complete_response(&events, &answer(TOKENS));
    let id = completed["id"].as_str().unwrap();
    let body = json!({"model": "chat", "input": "more", "previous_response_id": id});
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/responses", gw.base_url()),
        body.to_string(),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let sent = primary.last_json(SimEndpoint::OpenAiResponses).unwrap();
    assert!(sent.get("previous_response_id").is_none(), "{sent}");
    let input = sent["input"].to_string();
    assert!(
        input.contains(&answer(TOKENS).trim_end().to_string()),
        "{sent}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
