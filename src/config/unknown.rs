//! Unknown fields, all of them in one pass: the file is read into the raw
//! shape with `serde_ignored` collecting every key no field takes (instead
//! of `deny_unknown_fields` stopping at the first), and each is reported
//! with the nearest known field name at its place. The known names come
//! from the raw types themselves (their `Deserialize` is driven along the
//! key path by [`known_fields`]), so a field added to `raw` is known here
//! without a list to keep. Owns no validation rule of any setting.

use super::keypath::{self, Segment};
use super::raw::RawConfig;
use super::{suggest, ConfigIssue};
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use std::cell::Cell;

/// The most unknown keys reported: a file of the wrong kind (say, a
/// Cargo.toml) should not print thousands of lines.
const MAX_UNKNOWN: usize = 100;

/// Reads `text` into the raw shape; the unknown keys are returned as
/// issues (without lines: the caller adds them), the first TOML or type
/// error as `Err`.
pub(super) fn read(text: &str) -> Result<(RawConfig, Vec<ConfigIssue>), toml::de::Error> {
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(toml::Deserializer::new(text), |path| {
        if unknown.len() < MAX_UNKNOWN {
            let mut segments = Vec::new();
            push_segments(&path, &mut segments);
            unknown.push(segments);
        }
    })?;
    Ok((raw, unknown.iter().map(|path| issue(path)).collect()))
}

fn push_segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            push_segments(parent, out);
            out.push(Segment::Index(*index));
        }
        Path::Map { parent, key } => {
            push_segments(parent, out);
            out.push(Segment::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => push_segments(parent, out),
    }
}

/// The issue for one unknown key, with the nearest known field as hint.
fn issue(path: &[Segment]) -> ConfigIssue {
    let (name, parent) = match path.split_last() {
        Some((Segment::Key(name), parent)) => (name.as_str(), parent),
        _ => ("?", path),
    };
    let known = known_fields(parent).unwrap_or_default();
    let hint = match suggest::nearest(name, known.iter().copied()) {
        Some(near) => format!("did you mean `{near}`?"),
        None if known.is_empty() => "remove it".to_owned(),
        None => format!("known fields here: {}", known.join(", ")),
    };
    ConfigIssue {
        path: keypath::display(path),
        message: format!("unknown field `{name}`"),
        hint: Some(hint),
        line: None,
    }
}

/// The field names the raw config takes at `path` (a struct's fields), or
/// `None` when `path` leads to no struct.
pub(super) fn known_fields(path: &[Segment]) -> Option<&'static [&'static str]> {
    let found = Cell::new(None);
    // The probe always ends in an error: it stops where it finds the fields.
    let _ = <RawConfig as serde::Deserialize>::deserialize(Probe {
        path,
        found: &found,
    });
    found.get()
}

/// A deserializer that walks one key path through a type's `Deserialize`
/// and records the field list of the struct it ends at.
#[derive(Clone, Copy)]
struct Probe<'p> {
    path: &'p [Segment],
    found: &'p Cell<Option<&'static [&'static str]>>,
}

impl<'p> Probe<'p> {
    fn rest(self) -> Probe<'p> {
        Probe {
            path: self.path.get(1..).unwrap_or_default(),
            found: self.found,
        }
    }
}

fn stop() -> de::value::Error {
    de::Error::custom("probe stopped")
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(stop())
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if self.path.is_empty() {
            self.found.set(Some(fields));
            return Err(stop());
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.path.first() {
            Some(Segment::Key(key)) => visitor.visit_map(OneEntry {
                key: Some(key),
                value: self.rest(),
            }),
            _ => Err(stop()),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.path.first() {
            Some(Segment::Index(_)) => visitor.visit_seq(OneElement(Some(self.rest()))),
            _ => Err(stop()),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier
        ignored_any
    }
}

/// A map of one entry: the path's next key, then the rest of the path.
struct OneEntry<'p> {
    key: Option<&'p String>,
    value: Probe<'p>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.as_str().into_deserializer()).map(Some),
            None => Err(stop()),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(self.value)
    }
}

/// A sequence of one element: the rest of the path.
struct OneElement<'p>(Option<Probe<'p>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = de::value::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.0.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Err(stop()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &[&str]) -> Vec<Segment> {
        path.iter()
            .map(|s| match s.parse() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key((*s).to_owned()),
            })
            .collect()
    }

    #[test]
    fn known_fields_follow_structs_maps_options_and_lists() {
        let top = known_fields(&[]).unwrap();
        assert!(
            top.contains(&"routes") && top.contains(&"server"),
            "{top:?}"
        );
        let server = known_fields(&keys(&["server"])).unwrap();
        assert!(server.contains(&"listen"), "{server:?}");
        let retry = known_fields(&keys(&["routes", "any-name", "retry"])).unwrap();
        assert!(retry.contains(&"max_attempts_per_target"), "{retry:?}");
        let target = known_fields(&keys(&["routes", "r", "targets", "3"])).unwrap();
        assert!(target.contains(&"provider"), "{target:?}");
        let pool_key = known_fields(&keys(&["providers", "p", "keys", "0"])).unwrap();
        assert!(pool_key.contains(&"env"), "{pool_key:?}");
        assert_eq!(known_fields(&keys(&["server", "listen"])), None);
    }

    #[test]
    fn every_unknown_key_is_collected_with_a_suggestion() {
        let text = "[server]\nlisn = \"x\"\n[defaults.retry]\nbase_backof = \"1s\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\", wieght = 2 }]\n[nonsense]\n";
        let (_, issues) = read(text).unwrap();
        let shown: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "server.lisn: unknown field `lisn` (hint: did you mean `listen`?)",
                "defaults.retry.base_backof: unknown field `base_backof` (hint: did you mean `base_backoff`?)",
                "routes.r.targets[0].wieght: unknown field `wieght` (hint: did you mean `weight`?)",
                "nonsense: unknown field `nonsense` (hint: known fields here: server, defaults, providers, routes, prices, alerts, store, request_log, limits, admin, keys, responses)",
            ]
        );
    }
}
