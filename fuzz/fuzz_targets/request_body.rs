//! `InspectedBody::parse`, then `with_model`: a body the gateway accepts is
//! JSON that a serde-based reader (an adapter, an upstream) can read, and the
//! rewrite replaces the model literal without touching any other byte.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard::api::InspectedBody;

/// Locates the model literal independently of the code under test.
#[derive(Deserialize)]
struct ModelLiteral<'a> {
    #[serde(borrow)]
    model: &'a RawValue,
}

fuzz_target!(|data: &[u8]| {
    let Ok(inspected) = InspectedBody::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert!(!inspected.model().is_empty(), "accepted an empty model");
    serde_json::from_slice::<serde::de::IgnoredAny>(data).expect("an accepted body is JSON");
    // A lone surrogate escape is valid JSON syntax that `Value` refuses: the
    // gateway forwards it untouched. Depth is the gateway's to bound.
    let value = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(value) => Some(value),
        Err(e) => {
            assert!(
                !e.to_string().contains("recursion limit"),
                "accepted a body nested too deep to read: {e}"
            );
            None
        }
    };
    let located: ModelLiteral<'_> = serde_json::from_slice(data).expect("model located");
    let old = located.model.get().as_bytes();
    let start = old.as_ptr() as usize - data.as_ptr() as usize;
    let end = start + old.len();

    let models = [
        "gpt-4o".to_owned(),
        inspected.model().to_owned(),
        "a \"quoted\"\\ name \u{e9} \u{1F600}".to_owned(),
    ];
    for model in models {
        let literal = serde_json::to_vec(&model).expect("a string serializes");
        let rewritten = inspected.with_model(&literal);
        assert_eq!(
            rewritten.get(..start),
            data.get(..start),
            "bytes before the model"
        );
        assert_eq!(
            rewritten.get(start..start + literal.len()),
            Some(&literal[..]),
            "the model literal"
        );
        assert_eq!(
            rewritten.get(start + literal.len()..),
            data.get(end..),
            "bytes after the model"
        );
        let again = InspectedBody::parse(rewritten.clone()).expect("a rewritten body parses");
        assert_eq!(again.model(), model);
        assert_eq!(again.stream(), inspected.stream());
        if let Some(mut expected) = value.clone() {
            expected["model"] = serde_json::Value::String(model);
            let got: serde_json::Value =
                serde_json::from_slice(&rewritten).expect("a rewritten body is JSON");
            assert_eq!(got, expected);
        }
    }
});
