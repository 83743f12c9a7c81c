//! Key paths in the config file: the segments of a path such as
//! `routes.chat.targets[1].provider`, how one is written in an error, and
//! the line of the file it names (read from the parsed document's spans).
//! Pure: no validation rules live here.

use std::ops::Range;
use toml_edit::{ImDocument, Item, TableLike, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Writes segments as validation errors name them: keys joined by `.`
/// (quoted when they are not bare TOML keys), indexes as `[i]`.
pub(crate) fn display(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if is_bare(key) {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits a displayed path back into segments. Dots inside quotes are part
/// of the key; an unquoted key may still contain dots (a route named
/// `gpt-4.1`), which [`line_of`] resolves against the document.
pub(crate) fn parse(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    let flush = |key: &mut String, segments: &mut Vec<Segment>| {
        if !key.is_empty() {
            segments.push(Segment::Key(std::mem::take(key)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    key.push(c);
                }
            }
            '.' => flush(&mut key, &mut segments),
            '[' => {
                flush(&mut key, &mut segments);
                let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
                match digits.parse() {
                    Ok(i) => segments.push(Segment::Index(i)),
                    Err(_) => return segments,
                }
            }
            c => key.push(c),
        }
    }
    flush(&mut key, &mut segments);
    segments
}

/// Where in the document a node is.
enum Node<'a> {
    Table(&'a dyn TableLike),
    Tables(&'a toml_edit::ArrayOfTables),
    Array(&'a toml_edit::Array),
    Leaf,
}

fn node_of_item(item: &Item) -> Node<'_> {
    match item {
        Item::Table(t) => Node::Table(t),
        Item::ArrayOfTables(a) => Node::Tables(a),
        Item::Value(v) => node_of_value(v),
        Item::None => Node::Leaf,
    }
}

fn node_of_value(value: &Value) -> Node<'_> {
    match value {
        Value::InlineTable(t) => Node::Table(t),
        Value::Array(a) => Node::Array(a),
        _ => Node::Leaf,
    }
}

/// The 1-based line of the deepest part of `path` present in `doc`: the
/// key itself, or the table it is missing from.
pub(crate) fn line_of(doc: &ImDocument<&str>, path: &str) -> Option<usize> {
    let segments = parse(path);
    let mut node = Node::Table(doc.as_table());
    let mut found: Option<Range<usize>> = None;
    let mut i = 0;
    while i < segments.len() {
        let (next, span, step) = match (&node, &segments[i]) {
            (Node::Table(table), Segment::Key(_)) => match child_key(*table, &segments[i..]) {
                Some((taken, span, item)) => (node_of_item(item), span, taken),
                None => break,
            },
            (Node::Tables(tables), Segment::Index(n)) => match tables.get(*n) {
                Some(table) => (Node::Table(table), table.span(), 1),
                None => break,
            },
            (Node::Array(array), Segment::Index(n)) => match array.get(*n) {
                Some(value) => (node_of_value(value), value.span(), 1),
                None => break,
            },
            _ => break,
        };
        found = span.or(found);
        node = next;
        i += step;
    }
    let start = found?.start;
    Some(line_at(doc.raw(), start))
}

/// The child named by the longest run of key segments (a key may contain
/// dots), with how many segments it took.
fn child_key<'a>(
    table: &'a dyn TableLike,
    segments: &[Segment],
) -> Option<(usize, Option<Range<usize>>, &'a Item)> {
    let keys: Vec<&str> = segments
        .iter()
        .map_while(|s| match s {
            Segment::Key(k) => Some(k.as_str()),
            Segment::Index(_) => None,
        })
        .collect();
    (1..=keys.len()).rev().find_map(|n| {
        let name = keys.get(..n)?.join(".");
        let (key, item) = table.get_key_value(&name)?;
        Some((n, key.span(), item))
    })
}

/// The 1-based line of a byte offset.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_display_and_parse() {
        let segments = vec![
            Segment::Key("routes".into()),
            Segment::Key("gpt-4.1".into()),
            Segment::Key("targets".into()),
            Segment::Index(2),
            Segment::Key("provider".into()),
        ];
        let text = display(&segments);
        assert_eq!(text, r#"routes."gpt-4.1".targets[2].provider"#);
        assert_eq!(parse(&text), segments);
    }

    #[test]
    fn lines_are_found_for_keys_tables_and_array_elements() {
        let text = "[server]\nlisten = \"x\"\n\n[routes.\"gpt-4.1\"]\ntargets = [\n  { provider = \"a\", model = \"m\" },\n  { provider = \"b\", model = \"m\" },\n]\n[[routes.other.targets]]\nprovider = \"c\"\n";
        let doc = ImDocument::parse(text).unwrap();
        assert_eq!(line_of(&doc, "server.listen"), Some(2));
        assert_eq!(line_of(&doc, "server.missing"), Some(1));
        assert_eq!(line_of(&doc, "routes.gpt-4.1.targets[1].provider"), Some(7));
        assert_eq!(line_of(&doc, "routes.other.targets[0].provider"), Some(10));
        assert_eq!(line_of(&doc, "providers.p"), None);
    }
}
