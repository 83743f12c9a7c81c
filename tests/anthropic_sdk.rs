//! The official `anthropic` Python SDK against the gateway's `/v1/messages`:
//! a team whose tools speak Anthropic's protocol gets the same routing and
//! failover, here served by OpenAI-compatible upstreams (the simulator).
//! The script asserts what the SDK saw; this test also checks the
//! gateway's side (failover happened, the cut stream was counted).

mod common;

use common::*;
use switchyard::sim::{Fault, FaultAction};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_sdk_works_through_the_gateway() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    // Request 1 fails over (primary 503 twice); requests 2-4 are plain;
    // request 5's stream is cut after two content chunks.
    primary.push_script([
        Fault::status(503),
        Fault::status(503),
        Fault::ok(Default::default()),
        Fault::ok(Default::default()),
        Fault::ok(Default::default()),
        FaultAction::DropAfter(2).into(),
    ]);
    let gw = gateway_resume_off(&[&primary, &secondary], FAST).await;
    let v = run_python_client("anthropic_client", gw.base_url()).await;
    assert_eq!(v["failures"], serde_json::json!([]), "{v:#}");
    assert_eq!(
        v["plain"]["target"], "p1/gpt-4o",
        "the first request failed over: {v:#}"
    );
    assert_eq!(v["cut"]["raised"], true, "{v:#}");
    // Six requests reached the primary (two failed), four the secondary
    // (the failover, then three when their turn came); refused requests
    // reached no one.
    assert_eq!(primary.stats().requests + secondary.stats().requests, 7);
}
