//! The official `openai` Python SDK against the gateway: the real client
//! apps use must parse our responses, streams and errors. The SDK is
//! installed into `.venv` (by `.ci/run`, or here on first use).

mod common;

use common::*;
use std::time::Duration;
use switchyard::sim::{Behavior, Fault, FaultAction, SimEndpoint, SimHandle};

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
    let gw = gateway_resume_off(&[&primary, &secondary], FAST).await;
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

/// Routes `{endpoint}-{failure}` over a primary that fails that way and a
/// secondary that answers, for every pass-through endpoint.
fn failover_routes(sims: &[(&str, &SimHandle)]) -> String {
    let mut text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n");
    for (name, sim) in sims {
        text.push_str(&format!(
            "[providers.{name}]\nbase_url = \"{}\"\n",
            sim.base_url()
        ));
    }
    let endpoints = [
        ("instruct", "gpt-3.5-turbo-instruct"),
        ("moderation", "omni-moderation-latest"),
        ("image", "dall-e-3"),
        ("tts", "tts-1"),
        ("stt", "whisper-1"),
    ];
    for (route, model) in endpoints {
        for failure in ["503", "429", "cut"] {
            text.push_str(&format!(
                "[routes.{route}-{failure}]\ntargets = [{{ provider = \"p{failure}\", model = \"{model}\" }}, {{ provider = \"secondary\", model = \"{model}\" }}]\n"
            ));
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_pass_through_endpoints_fail_over() {
    let p503 = sim_with("p503", failing(503)).await;
    let p429 = sim_with(
        "p429",
        Behavior {
            status_rates: vec![(429, 1.0)],
            retry_after: Some(Duration::from_millis(50)),
            ..Behavior::default()
        },
    )
    .await;
    // Streams (and speech, whose body is streamed) are cut before content.
    let pcut = sim_with(
        "pcut",
        Behavior {
            drop_after: Some((0, 1.0)),
            ..Behavior::default()
        },
    )
    .await;
    let secondary = sim("secondary").await;
    let text = failover_routes(&[
        ("p503", &p503),
        ("p429", &p429),
        ("pcut", &pcut),
        ("secondary", &secondary),
    ]);
    let gw = gateway_from_text(&text).await;
    let v = run_python_client("openai_endpoints_client", gw.base_url()).await;
    let served = |key: &str, model: &str| {
        assert_eq!(
            v[key]["target"],
            format!("secondary/{model}").as_str(),
            "{key}: {}",
            v[key]
        );
    };
    let all_tokens = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7";
    for failure in ["503", "429"] {
        let key = format!("completion-{failure}");
        served(&key, "gpt-3.5-turbo-instruct");
        assert_eq!(v[&key]["text"], all_tokens);
        assert_eq!(v[&key]["object"], "text_completion");
        assert_eq!(v[&key]["finish_reason"], "stop");

        let key = format!("moderation-{failure}");
        served(&key, "omni-moderation-latest");
        assert_eq!(v[&key]["flagged"], serde_json::json!([false, true]));
        assert_eq!(v[&key]["violence"], true);

        let key = format!("image-{failure}");
        served(&key, "dall-e-3");
        assert_eq!(
            (&v[&key]["count"], &v[&key]["png"]),
            (&1.into(), &true.into())
        );

        let key = format!("transcription-{failure}");
        served(&key, "whisper-1");
        assert!(
            v[&key]["text"]
                .as_str()
                .unwrap()
                .starts_with("simulated transcribe of "),
            "{}",
            v[&key]
        );
    }
    for failure in ["503", "429", "cut"] {
        let key = format!("completion_stream-{failure}");
        served(&key, "gpt-3.5-turbo-instruct");
        assert_eq!(v[&key]["text"], format!("{all_tokens} "));
        assert_eq!(v[&key]["finish_reason"], "stop");
        assert_eq!(v[&key]["usage_completion"], 8);

        let key = format!("speech-{failure}");
        served(&key, "tts-1");
        assert_eq!(v[&key]["len"], 8 * 417, "every MP3 frame: {}", v[&key]);
        assert_eq!(v[&key]["frame_sync"], true);
        assert_eq!(v[&key]["content_type"], "audio/mpeg");
    }
    served("transcription_text-503", "whisper-1");
    let plain = &v["transcription_text-503"];
    assert!(
        plain["text"]
            .as_str()
            .unwrap()
            .starts_with("simulated transcribe of "),
        "{plain}"
    );
    assert!(plain["content_type"]
        .as_str()
        .unwrap()
        .starts_with("text/plain"));
    served("translation-503", "whisper-1");
    assert!(v["translation-503"]["text"]
        .as_str()
        .unwrap()
        .starts_with("simulated translate of "));

    // What the secondary received: the multipart form carried the WAV.
    let wav_len = v["wav_len"].as_u64().unwrap();
    let uploads: Vec<_> = secondary
        .bodies()
        .into_iter()
        .filter(|b| b.endpoint == SimEndpoint::OpenAiTranscriptions)
        .collect();
    assert_eq!(uploads.len(), 3);
    assert!(uploads.iter().all(|b| b.body.len() as u64 > wav_len));
    assert!(p429.stats().errors_by_status[&429] >= 2);
    assert!(pcut.stats().dropped >= 2, "{:?}", pcut.stats());
}
