//! Stream continuation end to end: a stream cut after content is
//! continued on the route's next target (prefill on an Anthropic target,
//! an instructed continuation with overlap removal on an OpenAI one), and
//! the client sees one complete answer; the simulators' logs show what
//! each target received.

mod common;

use common::*;
use http::{Method, StatusCode};
use switchyard::sim::{FaultAction, SimEndpoint, SimHandle};

/// A route `chat` over `targets` (`(provider kind, sim)`), with `extra`
/// route settings.
fn config(targets: &[(&str, &SimHandle)], route_extra: &str, timeouts: &str) -> String {
    let mut text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{timeouts}\n");
    let mut list = Vec::new();
    for (i, (kind, sim)) in targets.iter().enumerate() {
        let (url, model) = match *kind {
            "anthropic" => (sim.origin(), "claude-sonnet-4-5"),
            _ => (sim.base_url(), "gpt-4o"),
        };
        text.push_str(&format!(
            "[providers.t{i}]\nkind = \"{kind}\"\nbase_url = \"{url}\"\napi_key_env = \"KEY\"\n"
        ));
        list.push(format!("{{ provider = \"t{i}\", model = \"{model}\" }}"));
    }
    text.push_str(&format!(
        "[routes.chat]\n{route_extra}\ntargets = [{}]\n",
        list.join(", ")
    ));
    text
}

async fn gateway_for(
    targets: &[(&str, &SimHandle)],
    route_extra: &str,
) -> switchyard::server::Gateway {
    gateway_with_env(&config(targets, route_extra, FAST), |_| {
        Some("test-key".into())
    })
    .await
}

fn ask(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "chat",
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "count"}],
    })
}

fn parsed(events: &[String]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect()
}

/// The stream reads as one: a complete answer, one id, one model, one
/// role preamble, exactly one finish reason, `[DONE]` last; its usage.
fn assert_one_complete_stream(events: &[String], expected: &str) -> serde_json::Value {
    assert_eq!(sse_content(events), expected, "{events:#?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = parsed(events);
    assert!(
        chunks.iter().all(|c| c.get("error").is_none()),
        "{chunks:#?}"
    );
    let ids: std::collections::HashSet<_> = chunks.iter().map(|c| c["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one chunk id: {ids:?}");
    let models: std::collections::HashSet<_> = chunks.iter().map(|c| c["model"].clone()).collect();
    assert_eq!(models.len(), 1, "one model: {models:?}");
    let roles = chunks
        .iter()
        .filter(|c| !c["choices"][0]["delta"]["role"].is_null())
        .count();
    assert_eq!(roles, 1, "one role preamble");
    let finishes: Vec<_> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .collect();
    assert_eq!(finishes, vec![serde_json::json!("stop")]);
    let usage: Vec<_> = chunks.iter().filter(|c| c["usage"].is_object()).collect();
    assert_eq!(usage.len(), 1, "one usage chunk");
    usage[0]["usage"].clone()
}

#[tokio::test]
async fn a_cut_stream_is_continued_by_prefill_on_an_anthropic_target() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let claude = sim60("claude", |_| {}).await;
    let gw = gateway_for(&[("openai", &primary), ("anthropic", &claude)], "").await;
    let client = client();
    let reply = chat(&client, &gw, ask(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let events = sse_data(&reply.body);
    let usage = assert_one_complete_stream(&events, &answer(TOKENS));
    assert_eq!(usage["completion_tokens"], TOKENS, "{usage}");
    assert!(
        reply
            .text()
            .contains(": switchyard continued from t0/gpt-4o to t1/claude-sonnet-4-5"),
        "the seam is marked by a comment"
    );
    // What the fallback received: the partial answer as a prefill,
    // without the trailing space Anthropic refuses.
    let sent = claude.last_json(SimEndpoint::AnthropicMessages).unwrap();
    let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "assistant");
    assert_eq!(last["content"][0]["text"], answer(40).trim_end(), "{last}");
    assert_eq!(
        continuation_of(&claude),
        [Some("prefill from tok39".into())]
    );
    let counters = gw.counters();
    assert_eq!(counters.streams_cut, 0);
    // What a drill report reads: one continuation, and it completed.
    assert_eq!(
        (counters.continuations, counters.continuations_completed),
        (1, 1)
    );
    assert_eq!(counters.continuations_unavailable, 0);
    let metrics = metrics_text(&gw).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_streams_resumed_total{"))
        .unwrap_or_else(|| panic!("no resumed metric in {metrics}"));
    assert!(line.contains("from=\"t0/gpt-4o\""), "{line}");
    assert!(line.contains("to=\"t1/claude-sonnet-4-5\""), "{line}");
    assert!(line.contains("outcome=\"completed\""), "{line}");
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn an_instructed_continuation_has_its_repeat_removed() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::ErrorEventAfter(40).into()]);
    let fallback = sim60("fallback", |b| b.continue_overlap = 3).await;
    let gw = gateway_for(&[("openai", &primary), ("openai", &fallback)], "").await;
    let reply = chat(&client(), &gw, ask(true)).await;
    let events = sse_data(&reply.body);
    let usage = assert_one_complete_stream(&events, &answer(TOKENS));
    assert_eq!(usage["completion_tokens"], TOKENS, "{usage}");
    let sent = fallback.last_json(SimEndpoint::OpenAiChat).unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{sent}");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], answer(40));
    assert_eq!(messages[2]["role"], "user");
    assert!(messages[2]["content"]
        .as_str()
        .unwrap()
        .contains("Continue"));
    // The fallback repeated three tokens; the client never saw them twice.
    assert_eq!(
        continuation_of(&fallback),
        [Some("instruct from tok37".into())]
    );
}

#[tokio::test]
async fn a_stalled_stream_is_continued() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::StallAfter(40).into()]);
    let fallback = sim60("fallback", |_| {}).await;
    let timeouts = FAST.replace("idle = \"5s\"", "idle = \"200ms\"");
    let text = config(
        &[("openai", &primary), ("anthropic", &fallback)],
        "",
        &timeouts,
    );
    let gw = gateway_with_env(&text, |_| Some("test-key".into())).await;
    let reply = chat(&client(), &gw, ask(true)).await;
    let events = sse_data(&reply.body);
    assert_one_complete_stream(&events, &answer(TOKENS));
    assert_eq!(primary.requests()[0].outcome, "stall");
    // The stalled upstream's connection was closed.
    eventually("the stalled stream is cancelled", || {
        primary.stats().cancelled == 1
    })
    .await;
}

#[tokio::test]
async fn a_target_refusing_prefill_is_skipped() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let refuses = sim60("refuses", |b| b.reject_prefill = true).await;
    let last = sim60("last", |_| {}).await;
    let gw = gateway_for(
        &[
            ("openai", &primary),
            ("anthropic", &refuses),
            ("openai", &last),
        ],
        "",
    )
    .await;
    let reply = chat(&client(), &gw, ask(true)).await;
    let events = sse_data(&reply.body);
    assert_one_complete_stream(&events, &answer(TOKENS));
    assert_eq!(continuation_of(&refuses), [Some("prefill rejected".into())]);
    assert_eq!(continuation_of(&last), [Some("instruct from tok40".into())]);
}

#[tokio::test]
async fn when_no_target_can_continue_the_cut_names_the_original_failure() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let refuses = sim60("refuses", |b| b.reject_prefill = true).await;
    let gw = gateway_for(&[("openai", &primary), ("anthropic", &refuses)], "").await;
    let reply = chat(&client(), &gw, ask(true)).await;
    let events = sse_data(&reply.body);
    assert_eq!(sse_content(&events), answer(40));
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut", "{last}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(message.contains("connection lost"), "{message}");
    assert!(
        !message.contains("400") && !message.contains("prefill"),
        "{message}"
    );
    assert_eq!(continuation_of(&refuses), [Some("prefill rejected".into())]);
    let counters = gw.counters();
    assert_eq!(counters.streams_cut, 1);
    assert_eq!(
        (counters.continuations, counters.continuations_unavailable),
        (0, 1)
    );
}

#[tokio::test]
async fn a_cut_inside_a_tool_call_is_not_continued() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(2).into()]);
    let fallback = sim60("fallback", |_| {}).await;
    let gw = gateway_for(&[("openai", &primary), ("openai", &fallback)], "").await;
    let mut body = ask(true);
    body["tools"] = serde_json::json!([{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]);
    let reply = chat(&client(), &gw, body).await;
    let events = sse_data(&reply.body);
    assert!(
        parsed(&events)
            .iter()
            .any(|c| c["choices"][0]["delta"]["tool_calls"].is_array()),
        "{events:#?}"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut", "{last}");
    assert_eq!(fallback.stats().requests, 0, "tool calls are not continued");
}

#[tokio::test]
async fn resume_off_keeps_the_cut() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let fallback = sim60("fallback", |_| {}).await;
    let gw = gateway_for(
        &[("openai", &primary), ("openai", &fallback)],
        "resume = \"off\"",
    )
    .await;
    let reply = chat(&client(), &gw, ask(true)).await;
    let events = sse_data(&reply.body);
    assert_eq!(sse_content(&events), answer(40));
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut");
    assert_eq!(fallback.stats().requests, 0);
}

/// Anthropic's event stream, encoded from the chat chunks, stays valid
/// across the seam: one message, one text block, one stop.
#[tokio::test]
async fn a_messages_stream_is_continued_with_a_valid_event_sequence() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let fallback = sim60("fallback", |b| b.continue_overlap = 2).await;
    let gw = gateway_for(&[("openai", &primary), ("openai", &fallback)], "").await;
    let body = serde_json::json!({
        "model": "chat",
        "max_tokens": 200,
        "stream": true,
        "messages": [{"role": "user", "content": "count"}],
    });
    let reply = call(
        &client(),
        Method::POST,
        &format!("http://{}/v1/messages", gw.addr()),
        body.to_string(),
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let events: Vec<serde_json::Value> = parsed(&sse_data(&reply.body));
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let count = |t: &str| types.iter().filter(|x| **x == t).count();
    assert_eq!(types.first(), Some(&"message_start"), "{types:?}");
    assert_eq!(types.last(), Some(&"message_stop"), "{types:?}");
    for once in [
        "message_start",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ] {
        assert_eq!(count(once), 1, "{once} in {types:?}");
    }
    assert_eq!(count("error"), 0, "{types:?}");
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, answer(TOKENS));
    let stop = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(stop["delta"]["stop_reason"], "end_turn");
}

/// The request log row of a continued stream names the chain: the break
/// on the first target, the target that finished, the outcome.
#[tokio::test]
async fn the_request_log_records_the_continuation() {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([FaultAction::DropAfter(40).into()]);
    let claude = sim60("claude", |_| {}).await;
    let dir = std::env::temp_dir().join(format!("switchyard-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let settings = format!("{FAST}\n[store]\nurl = \"{url}\"\n[request_log]\nenabled = true\n");
    let text = config(
        &[("openai", &primary), ("anthropic", &claude)],
        "",
        &settings,
    );
    let gw = gateway_with_env(&text, |_| Some("test-key".into())).await;
    let reply = chat(&client(), &gw, ask(true)).await;
    assert_one_complete_stream(&sse_data(&reply.body), &answer(TOKENS));
    gw.state()
        .request_log
        .get()
        .expect("request log on")
        .flush()
        .await;
    let store = switchyard::store::Store::connect(&url, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let rows = store
        .query_requests(&switchyard::store::RequestQuery::newest(1))
        .await
        .unwrap();
    let row = &rows[0];
    assert_eq!(row.outcome, "continued");
    assert_eq!(row.served_target.as_deref(), Some("t1/claude-sonnet-4-5"));
    let chain: serde_json::Value = serde_json::from_str(&row.attempts).unwrap();
    assert_eq!(chain[0]["target"], "t0/gpt-4o", "{chain}");
    assert_eq!(
        chain[0]["cause"], "stream cut after content: upstream connection lost",
        "{chain}"
    );
    assert_eq!(
        row.completion_tokens,
        Some(i64::from(40 + 21)),
        "billed for both calls"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Through the official SDKs (OpenAI's on chat, Anthropic's on
/// `/v1/messages`), each stream cut after 40 of 60 tokens: the fallback
/// continues it and each SDK reads one complete answer.
async fn sdks_read_continued_streams(fallback_kind: &str, fallback: SimHandle) {
    let primary = sim60("primary", |_| {}).await;
    primary.push_script([
        FaultAction::DropAfter(40).into(),
        FaultAction::DropAfter(40).into(),
    ]);
    let gw = gateway_for(&[("openai", &primary), (fallback_kind, &fallback)], "").await;
    let v = run_python_client("continued_stream_client", gw.base_url()).await;
    let full = answer(TOKENS);
    let openai = &v["openai"];
    assert_eq!(openai["text"], full.as_str(), "{v}");
    assert_eq!(openai["finishes"], serde_json::json!(["stop"]), "{v}");
    assert_eq!(
        (openai["ids"].as_u64(), openai["models"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(openai["completion_tokens"], TOKENS, "{v}");
    let messages = &v["anthropic"];
    assert_eq!(messages["text"], full.as_str(), "{v}");
    assert_eq!(messages["stop_reason"], "end_turn", "{v}");
    assert_eq!(messages["message_starts"], 1, "{v}");
    assert_eq!(messages["message_stops"], 1, "{v}");
    let continued = continuation_of(&fallback);
    assert_eq!(continued.len(), 2, "both streams continued: {continued:?}");
    assert!(continued.iter().all(Option::is_some), "{continued:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_read_a_stream_continued_by_prefill() {
    sdks_read_continued_streams("anthropic", sim60("claude", |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_read_a_stream_continued_by_instruction_with_overlap() {
    let fallback = sim60("fallback", |b| b.continue_overlap = 3).await;
    sdks_read_continued_streams("openai", fallback).await;
}
