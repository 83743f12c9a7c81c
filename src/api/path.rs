//! JSON paths into a request body, as error messages and OpenAI's `param`
//! name fields (`input[2].content[0].type`). Built on the stack while a
//! translator walks a document, and rendered only when a field is refused:
//! the one mechanism every translator uses to name the field at fault.

/// A JSON path into the request, rendered only when it names an error.
#[derive(Clone, Copy)]
pub struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    segment: Segment<'p>,
}

#[derive(Clone, Copy)]
pub enum Segment<'p> {
    Root,
    Key(&'p str),
    Index(usize),
}

impl<'p> Path<'p> {
    pub const ROOT: Path<'static> = Path {
        parent: None,
        segment: Segment::Root,
    };

    pub fn key(&'p self, key: &'p str) -> Path<'p> {
        Path {
            parent: Some(self),
            segment: Segment::Key(key),
        }
    }

    pub fn index(&'p self, index: usize) -> Path<'p> {
        Path {
            parent: Some(self),
            segment: Segment::Index(index),
        }
    }

    pub fn render(&self, out: &mut String) {
        if let Some(parent) = self.parent {
            parent.render(out);
        }
        match self.segment {
            Segment::Root => {}
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }

    /// The path as OpenAI's `param` names fields: `messages[2].content`;
    /// `(body)` for the root.
    pub fn field(&self) -> String {
        let mut field = String::new();
        self.render(&mut field);
        if field.is_empty() {
            field.push_str("(body)");
        }
        field
    }
}
