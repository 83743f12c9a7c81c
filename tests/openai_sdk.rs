//! The official `openai` Python SDK against the gateway: the real client
//! apps use must parse our responses, streams and errors. The SDK is
//! installed into `.venv` (by `.ci/run`, or here on first use).

mod common;

use common::*;
use switchyard::sim::{Fault, FaultAction};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_works_through_the_gateway() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    // Request 1 fails over (primary 503 twice); request 3's stream is cut.
    primary.push_script([
        Fault::status(503),
        Fault::status(503),
        Fault::ok(Default::default()),
        FaultAction::DropAfter(2).into(),
    ]);
    let gw = gateway(&[&primary, &secondary], FAST).await;
    let v = run_python_client("openai_client", gw.base_url()).await;

    assert_eq!(
        v["plain"]["content"],
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    );
    assert_eq!(v["plain"]["finish_reason"], "stop");
    assert_eq!(
        v["plain"]["target"], "p1/gpt-4o",
        "the first request failed over"
    );
    assert!(v["plain"]["usage_total"].as_u64().unwrap() > 0);

    assert_eq!(
        v["stream"]["content"],
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    );
    assert_eq!(v["stream"]["finish_reason"], "stop");
    assert!(
        v["stream"]["usage_total"].as_u64().unwrap() > 0,
        "stream_options passed through"
    );

    assert_eq!(
        v["cut"]["raised"], true,
        "the SDK must raise on a cut stream: {}",
        v["cut"]
    );
    assert_eq!(v["cut"]["content"], "tok0 tok1 ");
    assert!(
        v["cut"]["message"].as_str().unwrap().contains("cut"),
        "{}",
        v["cut"]
    );

    assert_eq!(v["unknown_model"]["raised"], true);
    assert_eq!(v["unknown_model"]["status"], 404);
    assert_eq!(v["unknown_model"]["code"], "model_not_found");

    assert_eq!(v["embeddings"]["count"], 3);
}
