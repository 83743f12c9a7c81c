//! Reading the file into the raw shape, finding every problem serde can:
//! each unknown field (`serde_ignored` collects every key no field takes,
//! instead of `deny_unknown_fields` stopping at the first) with the nearest
//! known field name at its place, and each value of the wrong type (the
//! key the error points at is taken out of the document and the rest read
//! again, so the next one is found too). The known names come from the raw
//! types themselves (their `Deserialize` is driven along the key path by
//! [`known_fields`]), so a field added to `raw` is known here without a
//! list to keep. Owns no validation rule of any setting.

use super::keypath::{self, Segment};
use super::raw::RawConfig;
use super::{suggest, ConfigErrors, ConfigIssue};
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use std::cell::Cell;
use toml_edit::{DocumentMut, Item, Value};

/// The most problems of one kind reported (and re-reads made): a file of
/// the wrong kind (say, a Cargo.toml) should not print thousands of lines.
const MAX_ISSUES: usize = 100;

/// Reads `text` into the raw shape. Unknown keys and values of the wrong
/// type are returned as issues (without lines: the caller adds them, from
/// the key path); a syntax error, or a type error no key can be found for,
/// ends the read with everything found so far.
pub(super) fn read(text: &str) -> Result<Read, ConfigErrors> {
    let mut current = text.to_owned();
    let mut typed: Vec<ConfigIssue> = Vec::new();
    // Array elements taken out so far (array path, index in the original),
    // to name later elements by their index in the file.
    let mut removed: Vec<(Vec<Segment>, usize)> = Vec::new();
    for rereads in 0..=MAX_ISSUES {
        let error = match read_once(&current) {
            Ok((raw, unknown)) => {
                let unknown = unknown.iter().map(|p| original_path(p, &removed));
                typed.extend(unknown.map(|p| unknown_issue(&p)));
                return Ok(Read {
                    raw,
                    issues: typed,
                    remap: Remap(removed),
                });
            }
            Err(e) => e,
        };
        // Spans live in the parsed document; the editable one drops them.
        let found = (rereads < MAX_ISSUES)
            .then(|| {
                let spanned = toml_edit::ImDocument::parse(current.as_str()).ok()?;
                let path = path_at(spanned.as_item(), error.span()?.start)?;
                Some((current.parse::<DocumentMut>().ok()?, path))
            })
            .flatten();
        let Some((mut doc, path)) = found else {
            if typed.is_empty() {
                return Err(super::toml_error(&current, &error));
            }
            // Its span is in the re-read text, not the file: no line.
            typed.push(type_issue("config".to_owned(), &error));
            return Err(ConfigErrors(typed));
        };
        let original = original_path(&path, &removed);
        // A table left without a field taken out for its wrong type: the
        // first issue already says what is wrong there.
        let known_below = typed
            .iter()
            .any(|i| keypath::parse(&i.path).starts_with(&original));
        if !known_below {
            typed.push(type_issue(keypath::display(&original), &error));
        }
        if let Some((Segment::Index(i), parent)) = original.split_last() {
            removed.push((parent.to_vec(), *i));
        }
        remove(doc.as_item_mut(), &path);
        let next = doc.to_string();
        if next == current {
            // Nothing could be taken out: reading again would find the same.
            if typed.is_empty() {
                return Err(super::toml_error(&current, &error));
            }
            return Err(ConfigErrors(typed));
        }
        current = next;
    }
    Err(ConfigErrors(typed))
}

/// What was read: the raw config (without the values of the wrong type),
/// the problems found, and which array elements were taken out.
pub(super) struct Read {
    pub(super) raw: RawConfig,
    pub(super) issues: Vec<ConfigIssue>,
    pub(super) remap: Remap,
}

/// The array elements taken out (array path, index in the file).
pub(super) struct Remap(Vec<(Vec<Segment>, usize)>);

impl Remap {
    /// A key path of the raw config as it is in the file (a validator's
    /// `targets[1]` is the file's `targets[2]` when `targets[0]` was taken
    /// out for a wrong type).
    pub(super) fn in_file(&self, path: &str) -> String {
        if self.0.is_empty() {
            return path.to_owned();
        }
        keypath::display(&original_path(&keypath::parse(path), &self.0))
    }
}

fn type_issue(path: String, error: &toml::de::Error) -> ConfigIssue {
    ConfigIssue {
        path,
        message: match error.message() {
            "" => "invalid value".to_owned(),
            m => m.to_owned(),
        },
        hint: None,
        line: None,
    }
}

/// One pass of serde over `text`: the raw config and its unknown keys.
fn read_once(text: &str) -> Result<(RawConfig, Vec<Vec<Segment>>), toml::de::Error> {
    let mut unknown: Vec<Vec<Segment>> = Vec::new();
    let raw: RawConfig = serde_ignored::deserialize(toml::Deserializer::new(text), |path| {
        if unknown.len() < MAX_ISSUES {
            let mut segments = Vec::new();
            push_segments(&path, &mut segments);
            unknown.push(segments);
        }
    })?;
    Ok((raw, unknown))
}

/// The path of the smallest value (or table header) whose span holds
/// `offset`; `None` at the root.
fn path_at(root: &Item, offset: usize) -> Option<Vec<Segment>> {
    let mut best: Option<(usize, Vec<Segment>)> = None;
    let mut path = Vec::new();
    visit(root, offset, &mut path, &mut best);
    best.map(|(_, path)| path).filter(|p| !p.is_empty())
}

fn visit(
    item: &Item,
    offset: usize,
    path: &mut Vec<Segment>,
    best: &mut Option<(usize, Vec<Segment>)>,
) {
    if let Some(span) = item.span() {
        let holds = span.start <= offset && offset < span.end.max(span.start + 1);
        if holds && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
            *best = Some((span.len(), path.clone()));
        }
    }
    if let Some(table) = item.as_table_like() {
        for (key, child) in table.iter() {
            path.push(Segment::Key(key.to_owned()));
            visit(child, offset, path, best);
            path.pop();
        }
        return;
    }
    let mut i = 0;
    while let Some(child) = item.get(i) {
        path.push(Segment::Index(i));
        visit(child, offset, path, best);
        path.pop();
        i += 1;
    }
}

/// Takes the node at `path` out of the document.
fn remove(root: &mut Item, path: &[Segment]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut parent = root;
    for segment in parent_path {
        let next = match segment {
            Segment::Key(k) => parent.get_mut(k.as_str()),
            Segment::Index(i) => parent.get_mut(*i),
        };
        match next {
            Some(next) => parent = next,
            None => return,
        }
    }
    match (last, parent) {
        (Segment::Key(k), parent) => {
            if let Some(table) = parent.as_table_like_mut() {
                table.remove(k);
            }
        }
        (Segment::Index(i), Item::ArrayOfTables(tables)) if *i < tables.len() => tables.remove(*i),
        (Segment::Index(i), Item::Value(Value::Array(array))) if *i < array.len() => {
            array.remove(*i);
        }
        _ => {}
    }
}

/// A path in the re-read document as it is in the file: indexes moved
/// down by elements taken out before them are moved back up.
fn original_path(path: &[Segment], removed: &[(Vec<Segment>, usize)]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(path.len());
    for segment in path {
        let mapped = match segment {
            Segment::Index(i) => {
                let mut taken: Vec<usize> = removed
                    .iter()
                    .filter(|(array, _)| *array == out)
                    .map(|(_, index)| *index)
                    .collect();
                taken.sort_unstable();
                let mut index = *i;
                for t in taken {
                    if t <= index {
                        index += 1;
                    }
                }
                Segment::Index(index)
            }
            key => key.clone(),
        };
        out.push(mapped);
    }
    out
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
fn unknown_issue(path: &[Segment]) -> ConfigIssue {
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
    fn odd_shapes_always_give_issues_with_a_path_and_a_message() {
        for text in [
            "routes = 5\n",
            "server = [1]\n",
            "[[routes]]\nx = 1\n",
            "[routes.r]\ntargets = [1, \"x\", { provider = 2 }, []]\n",
            "providers.p = 1\n[providers.q]\nkeys = [{ name = 1, env = [] }]\n",
            "[defaults]\nretry = { max_attempts_per_target = -1, jitter = 3 }\n",
            "a.b.c = { d = [ { e = 1 } ] }\n",
        ] {
            let issues = match read(text) {
                Ok(read) => read.issues,
                Err(e) => e.0,
            };
            assert!(!issues.is_empty(), "{text}");
            for issue in &issues {
                assert!(
                    !issue.path.is_empty() && !issue.message.is_empty(),
                    "{text}: {issue:?}"
                );
            }
        }
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
        let issues = read(text).unwrap().issues;
        let shown: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "server.lisn: unknown field `lisn` (hint: did you mean `listen`?)",
                "defaults.retry.base_backof: unknown field `base_backof` (hint: did you mean `base_backoff`?)",
                "routes.r.targets[0].wieght: unknown field `wieght` (hint: did you mean `weight`?)",
                "nonsense: unknown field `nonsense` (hint: known fields here: server, defaults, providers, routes, prices, alerts, store, request_log, limits, admin, keys, responses, idempotency, cluster, cache, telemetry)",
            ]
        );
    }
}
