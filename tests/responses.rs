//! The Responses API through the gateway: native and translated targets
//! (OpenAI, chat-only OpenAI-compatible, Anthropic and Gemini dialects of
//! the simulator), failover before first content, typed failure events
//! after it, conversations that survive failover to another provider, and
//! stored responses scoped to the key that created them.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard::sim::{Fault, FaultAction, SimEndpoint, SimHandle};

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(test: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-responses-{}-{test}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

struct Sims {
    oai: SimHandle,
    chat_only: SimHandle,
    claude: SimHandle,
    gem: SimHandle,
}

impl Sims {
    async fn start() -> Sims {
        Sims {
            oai: sim("oai").await,
            chat_only: sim("chat-only").await,
            claude: sim("claude").await,
            gem: sim("gem").await,
        }
    }

    /// Every dialect as a provider, one route per provider and `conv`
    /// over all of them in order.
    fn config(&self, dir: &TempDir, extra: &str) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n{extra}\n\
             [store]\nurl = \"sqlite://{db}\"\n\
             [providers.oai]\nbase_url = \"{oai}\"\napi_key_env = \"OAI_KEY\"\n\
             [providers.chatonly]\nbase_url = \"{chat}\"\nresponses = \"chat\"\n\
             [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{claude}\"\napi_key_env = \"CLAUDE_KEY\"\n\
             [providers.gem]\nkind = \"gemini\"\nbase_url = \"{gem}\"\napi_key_env = \"GEM_KEY\"\n\
             [routes.r-oai]\ntargets = [{{ provider = \"oai\", model = \"gpt-4o\" }}]\n\
             [routes.r-chat]\ntargets = [{{ provider = \"chatonly\", model = \"gpt-4o\" }}]\n\
             [routes.r-claude]\ntargets = [{{ provider = \"claude\", model = \"claude-sonnet-4-5\" }}]\n\
             [routes.r-gem]\ntargets = [{{ provider = \"gem\", model = \"gemini-2.5-flash\" }}]\n\
             [routes.conv]\ntargets = [{{ provider = \"oai\", model = \"gpt-4o\" }}, {{ provider = \"claude\", model = \"claude-sonnet-4-5\" }}, {{ provider = \"gem\", model = \"gemini-2.5-flash\" }}]\n\
             [routes.translated]\ntargets = [{{ provider = \"chatonly\", model = \"gpt-4o\" }}, {{ provider = \"gem\", model = \"gemini-2.5-flash\" }}]\n\
             [routes.claude-then-oai]\ntargets = [{{ provider = \"claude\", model = \"claude-sonnet-4-5\" }}, {{ provider = \"oai\", model = \"gpt-4o\" }}]\n",
            db = dir.0.join("store.db").display(),
            oai = self.oai.base_url(),
            chat = self.chat_only.base_url(),
            claude = self.claude.origin(),
            gem = self.gem.origin(),
        )
    }
}

fn fake_keys(name: &str) -> Option<String> {
    Some(format!("test-{}", name.to_lowercase()))
}

async fn gateway_for(sims: &Sims, dir: &TempDir) -> switchyard::server::Gateway {
    gateway_with_env(&sims.config(dir, ""), fake_keys).await
}

async fn respond(gw: &switchyard::server::Gateway, body: Value) -> Reply {
    call(
        &client(),
        Method::POST,
        &format!("{}/responses", gw.base_url()),
        body.to_string(),
        &[],
    )
    .await
}

/// The concatenated `output_text` of a Response object.
fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["text"].as_str().map(str::to_owned))
        .collect()
}

/// `(event type, data)` of every event of a Responses stream, checking
/// each `event:` line names its data's `type`.
fn parse_events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("event without a name: {e}"));
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name, "{e}");
            (name.to_owned(), data)
        })
        .collect()
}

/// Every event carries the next `sequence_number`.
fn assert_numbered_in_order(events: &[(String, Value)], route: &str) {
    let numbers: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "{route}: {numbers:?}"
    );
}

fn streamed_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect()
}

const CANNED: &str = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7";

#[tokio::test]
async fn every_dialect_answers_whole_and_streamed() {
    let sims = Sims::start().await;
    let dir = temp_dir("dialects");
    let gw = gateway_for(&sims, &dir).await;
    for route in ["r-oai", "r-chat", "r-claude", "r-gem"] {
        let reply = respond(
            &gw,
            json!({"model": route, "input": "hello", "instructions": "be brief"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{route}: {}", reply.text());
        let response = reply.json();
        assert_eq!(response["object"], "response", "{route}");
        assert_eq!(response["status"], "completed", "{route}");
        assert!(
            response["id"].as_str().unwrap().starts_with("resp_"),
            "{route}"
        );
        assert_eq!(output_text(&response).trim_end(), CANNED, "{route}");
        assert!(
            response["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{route}: {response}"
        );

        let reply = respond(
            &gw,
            json!({"model": route, "input": "hello", "instructions": "be brief", "stream": true}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{route}: {}", reply.text());
        assert!(reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream"));
        let events = parse_events(&reply.body);
        assert_eq!(events[0].0, "response.created", "{route}");
        let (last, done) = events.last().unwrap();
        assert_eq!(last, "response.completed", "{route}");
        assert_eq!(streamed_text(&events).trim_end(), CANNED, "{route}");
        assert_eq!(output_text(&done["response"]).trim_end(), CANNED, "{route}");
        assert!(
            done["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{route}"
        );
        assert_numbered_in_order(&events, route);
    }
    // Translated targets got chat: the instructions as a system message.
    let anthropic = sims
        .claude
        .last_json(SimEndpoint::AnthropicMessages)
        .unwrap();
    assert_eq!(anthropic["messages"][0]["content"][0]["text"], "hello");
    assert!(
        anthropic["system"].to_string().contains("be brief"),
        "{anthropic}"
    );
    let chat = sims.chat_only.bodies();
    assert!(
        chat.iter().all(|b| b.endpoint == SimEndpoint::OpenAiChat),
        "chat-only got chat"
    );
    let native = sims.oai.last_json(SimEndpoint::OpenAiResponses).unwrap();
    assert_eq!(
        native["input"], "hello",
        "native targets get the body as sent"
    );
}

#[tokio::test]
async fn a_failing_primary_is_failed_over_invisibly_native_and_translated() {
    let sims = Sims::start().await;
    let dir = temp_dir("failover");
    let gw = gateway_for(&sims, &dir).await;
    // Native primary: 503 twice (both attempts), then a stream cut before
    // its first content; the Anthropic fallback answers both.
    sims.oai.push_script([
        Fault::status(503),
        Fault::status(503),
        FaultAction::DropAfter(0).into(),
        FaultAction::DropAfter(0).into(),
    ]);
    let reply = respond(&gw, json!({"model": "conv", "input": "hello"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("claude/claude-sonnet-4-5")
    );
    assert_eq!(output_text(&reply.json()).trim_end(), CANNED);

    let reply = respond(
        &gw,
        json!({"model": "conv", "input": "hello", "stream": true}),
    )
    .await;
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("claude/claude-sonnet-4-5")
    );
    let events = parse_events(&reply.body);
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events.last().unwrap().0, "response.completed");
    assert_eq!(streamed_text(&events).trim_end(), CANNED);

    // Translated primary failing, native fallback.
    sims.claude
        .push_script([Fault::status(529), Fault::status(529)]);
    let reply = respond(
        &gw,
        json!({"model": "claude-then-oai", "input": "hello", "stream": true}),
    )
    .await;
    assert_eq!(reply.header("x-switchyard-target"), Some("oai/gpt-4o"));
    let events = parse_events(&reply.body);
    assert_eq!(events.last().unwrap().0, "response.completed");
}

#[tokio::test]
async fn a_stream_cut_after_content_ends_with_a_typed_failure() {
    let sims = Sims::start().await;
    let dir = temp_dir("cut");
    let gw = gateway_for(&sims, &dir).await;
    for (route, sim) in [("r-oai", &sims.oai), ("r-claude", &sims.claude)] {
        sim.push_script([FaultAction::DropAfter(3).into()]);
        let reply = respond(
            &gw,
            json!({"model": route, "input": "hello", "instructions": "be brief", "stream": true}),
        )
        .await;
        let events = parse_events(&reply.body);
        let (last, error) = events.last().unwrap();
        assert_eq!(last, "error", "{route}: {events:?}");
        assert_eq!(
            error["error"]["code"], "stream_cut",
            "the SDKs raise on `error`"
        );
        assert!(
            !streamed_text(&events).is_empty(),
            "{route}: content came first"
        );
        assert!(
            events.iter().all(|(name, _)| name != "response.completed"),
            "{route}: never looks complete"
        );
        assert_numbered_in_order(&events, route);
    }
}

#[tokio::test]
async fn a_conversation_survives_failover_to_another_dialect() {
    let sims = Sims::start().await;
    let dir = temp_dir("conversation");
    let gw = gateway_for(&sims, &dir).await;

    // Turn 1 on the native primary.
    let first = respond(&gw, json!({"model": "conv", "input": "my name is Ada"})).await;
    assert_eq!(first.header("x-switchyard-target"), Some("oai/gpt-4o"));
    let first = first.json();
    let first_id = first["id"].as_str().unwrap();

    // Turn 2: the primary is down; Anthropic must get the whole conversation.
    sims.oai
        .push_script([Fault::status(503), Fault::status(503)]);
    let second = respond(
        &gw,
        json!({"model": "conv", "input": "what is my name?", "previous_response_id": first_id}),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(
        second.header("x-switchyard-target"),
        Some("claude/claude-sonnet-4-5")
    );
    let got = sims
        .claude
        .last_json(SimEndpoint::AnthropicMessages)
        .unwrap();
    let messages = got["messages"].as_array().unwrap();
    let texts: Vec<String> = messages
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            parts => parts
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect(),
        })
        .collect();
    assert_eq!(messages.len(), 3, "{got}");
    assert_eq!(texts[0], "my name is Ada");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(texts[1], output_text(&first));
    assert_eq!(texts[2], "what is my name?");
    let second = second.json();
    assert_eq!(second["previous_response_id"], first_id);

    // Turn 3 back on the primary, which never saw turn 2: it gets the
    // conversation expanded, not an id it does not know.
    let third = respond(
        &gw,
        json!({"model": "conv", "input": "thanks", "previous_response_id": second["id"]}),
    )
    .await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text());
    assert_eq!(third.header("x-switchyard-target"), Some("oai/gpt-4o"));
    let got = sims.oai.last_json(SimEndpoint::OpenAiResponses).unwrap();
    assert!(got.get("previous_response_id").is_none(), "{got}");
    let input = got["input"].as_array().unwrap();
    assert_eq!(
        input.len(),
        5,
        "two turns, their answers and this input: {got}"
    );
    assert_eq!(input[4]["content"][0]["text"], "thanks");

    // Turn 4 follows turn 3 on the provider that holds it: passed through.
    let third_id = third.json()["id"].as_str().unwrap().to_owned();
    let fourth = respond(
        &gw,
        json!({"model": "conv", "input": "bye", "previous_response_id": third_id}),
    )
    .await;
    assert_eq!(fourth.status, StatusCode::OK, "{}", fourth.text());
    let got = sims.oai.last_json(SimEndpoint::OpenAiResponses).unwrap();
    assert_eq!(got["previous_response_id"], third_id.as_str());
    assert_eq!(got["input"], "bye");

    // An id the gateway never stored is not found, as OpenAI answers, and
    // never sent upstream.
    let before = sims.oai.stats().requests;
    let reply = respond(
        &gw,
        json!({"model": "conv", "input": "x", "previous_response_id": "resp_unknown"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
    assert_eq!(reply.json()["error"]["param"], "previous_response_id");
    assert_eq!(reply.openai_error().2, "previous_response_not_found");
    assert_eq!(sims.oai.stats().requests, before);
}

#[tokio::test]
async fn stored_responses_are_served_from_the_gateway_and_store_false_keeps_nothing() {
    let sims = Sims::start().await;
    let dir = temp_dir("stored");
    let gw = gateway_for(&sims, &dir).await;
    let created = respond(&gw, json!({"model": "r-claude", "input": [{"role": "user", "content": "hi"}, {"role": "user", "content": "there"}]})).await;
    let created = created.json();
    let id = created["id"].as_str().unwrap();
    let url = format!("{}/responses/{id}", gw.base_url());

    let got = call(&client(), Method::GET, &url, "", &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.json(), created);

    let items = call(
        &client(),
        Method::GET,
        &format!("{url}/input_items?order=asc&limit=1"),
        "",
        &[],
    )
    .await;
    let items = items.json();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["content"], "hi");
    assert_eq!(items["has_more"], true);

    let deleted = call(&client(), Method::DELETE, &url, "", &[]).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text());
    assert_eq!(deleted.json()["deleted"], true);
    let gone = call(&client(), Method::GET, &url, "", &[]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.openai_error().2, "response_not_found");

    let unstored = respond(
        &gw,
        json!({"model": "r-claude", "input": "x", "store": false}),
    )
    .await;
    let unstored_id = unstored.json()["id"].as_str().unwrap().to_owned();
    let gone = call(
        &client(),
        Method::GET,
        &format!("{}/responses/{unstored_id}", gw.base_url()),
        "",
        &[],
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn what_a_chat_target_cannot_express_skips_it_and_is_named_when_none_can() {
    let sims = Sims::start().await;
    let dir = temp_dir("inexpressible");
    let gw = gateway_for(&sims, &dir).await;
    let body =
        |model: &str| json!({"model": model, "input": "x", "tools": [{"type": "web_search"}]});
    let reply = respond(&gw, body("claude-then-oai")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-switchyard-target"), Some("oai/gpt-4o"));
    assert_eq!(sims.claude.stats().requests, 0, "skipped, not sent");

    let reply = respond(&gw, body("r-gem")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let error = &reply.json()["error"];
    assert_eq!(error["param"], "tools[0].type");
    assert!(
        error["message"].as_str().unwrap().contains("web_search"),
        "{error}"
    );

    let reply = respond(&gw, json!({"model": "r-oai", "input": 7})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["param"], "input");
}

#[tokio::test]
async fn stored_responses_belong_to_the_key_that_created_them() {
    let sims = Sims::start().await;
    let dir = temp_dir("owners");
    let text = sims
        .config(&dir, "")
        .replace("[server]\n", "[server]\nauth = \"keys\"\n");
    let gw = gateway_with_env(&text, fake_keys).await;
    let keys = gw.state().keys.get().expect("keys on").clone();
    let secret = |name: &'static str| {
        let keys = keys.clone();
        async move {
            let issued = keys
                .create(switchyard::keys::NewKey::new(name, "svc"))
                .await
                .unwrap();
            format!("Bearer {}", issued.secret.expose())
        }
    };
    let (alice, bob) = (secret("alice").await, secret("bob").await);
    let as_key = |bearer: &str| vec![("authorization", bearer.to_owned())];
    let send_as = |method: Method, url: String, body: String, bearer: String| async move {
        let headers = as_key(&bearer);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        call(&client(), method, &url, body, &headers).await
    };
    let created = send_as(
        Method::POST,
        format!("{}/responses", gw.base_url()),
        json!({"model": "r-claude", "input": "secret plans"}).to_string(),
        alice.clone(),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let url = format!("{}/responses/{id}", gw.base_url());

    let mine = send_as(Method::GET, url.clone(), String::new(), alice.clone()).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text());
    for (method, url) in [
        (Method::GET, url.clone()),
        (Method::GET, format!("{url}/input_items")),
        (Method::DELETE, url.clone()),
    ] {
        let theirs = send_as(method.clone(), url.clone(), String::new(), bob.clone()).await;
        assert_eq!(
            theirs.status,
            StatusCode::NOT_FOUND,
            "{method} {url}: {}",
            theirs.text()
        );
    }
    let continued = send_as(
        Method::POST,
        format!("{}/responses", gw.base_url()),
        json!({"model": "r-oai", "input": "more", "previous_response_id": id}).to_string(),
        bob.clone(),
    )
    .await;
    assert_eq!(
        continued.status,
        StatusCode::NOT_FOUND,
        "another key cannot continue it: {}",
        continued.text()
    );
    let anonymous = call(&client(), Method::GET, &url, "", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let still = send_as(Method::GET, url, String::new(), alice).await;
    assert_eq!(still.status, StatusCode::OK, "bob's delete did nothing");
}

/// The official `openai` SDK: whole, streamed (events and the accumulating
/// helper), a function-tool round trip whose second turn fails over to
/// another dialect, structured output, stored responses, a stream cut after
/// content and continued on another target, and a translated route; the
/// primaries fail in the order the script calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_speaks_the_responses_api_through_failover() {
    let sims = Sims::start().await;
    let dir = temp_dir("sdk");
    let gw = gateway_for(&sims, &dir).await;
    let ok = || Fault::ok(std::time::Duration::ZERO);
    sims.oai.push_script([
        // A: 503 on both attempts.
        Fault::status(503),
        Fault::status(503),
        // B: 429 + Retry-After, then the retry succeeds.
        FaultAction::Status {
            code: 429,
            retry_after: Some(std::time::Duration::from_secs(1)),
        }
        .into(),
        ok(),
        // C: cut before any content, twice.
        FaultAction::DropAfter(0).into(),
        FaultAction::DropAfter(0).into(),
        // D: the tool call, then 503 twice for the follow-up.
        ok(),
        Fault::status(503),
        Fault::status(503),
        // E: structured output.
        ok(),
        // G: cut after content.
        FaultAction::DropAfter(3).into(),
    ]);
    sims.chat_only
        .push_script([Fault::status(503), Fault::status(503)]);
    let v = run_python_client("openai_responses_client", gw.base_url()).await;

    assert_eq!(v["plain"]["target"], "claude/claude-sonnet-4-5", "{v}");
    assert_eq!(v["plain"]["text"].as_str().unwrap().trim_end(), CANNED);
    assert_eq!(v["plain"]["status"], "completed");
    assert!(v["plain"]["usage_total"].as_u64().unwrap() > 0);

    assert_eq!(v["stream"]["target"], "oai/gpt-4o", "429 waited out: {v}");
    assert_eq!(v["stream"]["first"], "response.created");
    assert_eq!(v["stream"]["last"], "response.completed");
    assert_eq!(v["stream"]["text"].as_str().unwrap().trim_end(), CANNED);
    assert_eq!(v["stream"]["final_text"], v["stream"]["text"]);

    assert_eq!(
        v["helper"]["text"].as_str().unwrap().trim_end(),
        CANNED,
        "{v}"
    );
    assert_eq!(v["helper"]["status"], "completed");

    assert_eq!(v["tools"]["name"], "get_weather");
    assert_eq!(v["tools"]["location"], "Paris");
    assert_eq!(v["tools"]["second_target"], "claude/claude-sonnet-4-5");
    assert!(!v["tools"]["answer"].as_str().unwrap().is_empty(), "{v}");
    let round_trip = sims.claude.bodies().into_iter().find_map(|b| {
        let sent = String::from_utf8_lossy(&b.body).into_owned();
        sent.contains("tool_use").then_some(sent)
    });
    let sent = round_trip.expect("the fallback got the tool round trip");
    assert!(
        sent.contains("tool_result") && sent.contains("sunny, 21 C"),
        "the fallback got the whole tool round trip: {sent}"
    );

    assert!(v["structured"]["parsed"]["name"].is_string(), "{v}");

    assert_eq!(v["stored"]["same_text"], true, "{v}");
    assert_eq!(v["stored"]["items"], json!(["message"]));
    assert_eq!(v["stored"]["after_delete"], 404);

    // G: cut after three tokens of a native stream, continued on Claude.
    assert_eq!(
        v["cut"]["raised"], false,
        "a cut stream is continued, not raised on: {v}"
    );
    assert_eq!(v["cut"]["text"].as_str().unwrap().trim_end(), CANNED, "{v}");
    assert_eq!(v["cut"]["final_text"], v["cut"]["text"], "{v}");
    assert_eq!(v["cut"]["numbered_in_order"], true, "{v}");

    assert_eq!(v["translated"]["target"], "gem/gemini-2.5-flash", "{v}");
    assert_eq!(v["translated"]["last"], "response.completed");
    assert_eq!(v["translated"]["text"].as_str().unwrap().trim_end(), CANNED);
}

/// The OpenAI Agents SDK (its default Responses model) runs a tool-using
/// agent through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_agents_sdk_runs_a_tool_using_agent() {
    let sims = Sims::start().await;
    let dir = temp_dir("agents");
    let gw = gateway_for(&sims, &dir).await;
    // The second model call fails over to Anthropic mid-run.
    sims.oai.push_script([
        Fault::ok(std::time::Duration::ZERO),
        Fault::status(503),
        Fault::status(503),
    ]);
    let v = run_python_client("openai_agents_client", gw.base_url()).await;
    assert_eq!(
        v["calls"],
        json!([{"location": "Paris", "unit": "celsius"}]),
        "{v}"
    );
    assert_eq!(v["turns"], 2, "{v}");
    assert!(!v["final_output"].as_str().unwrap().is_empty(), "{v}");
    let claude = sims
        .claude
        .last_json(SimEndpoint::AnthropicMessages)
        .unwrap();
    assert!(
        claude["messages"].to_string().contains("sunny, 21 degrees"),
        "{claude}"
    );
}
