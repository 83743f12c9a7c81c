//! Continuing the sim's deterministic answer (`tok0 tok1 … tokN-1 `) from
//! a partial one: a request whose last message is the assistant's partial
//! answer (a prefill), or whose partial assistant answer is followed by a
//! user message asking to continue it (an instructed continuation), gets
//! the rest of the same sequence, so a test can check a stitched answer
//! token by token. Behaviours can make an instructed continuation repeat
//! its last few tokens (`continue_overlap`), as real models sometimes do,
//! or refuse prefills with a 400 (`reject_prefill`).

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Prefill,
    Instruct,
}

/// Where a continuation picks the answer up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resume {
    pub(crate) mode: Mode,
    /// The first token sent.
    pub(crate) from: u32,
    /// Bytes of token `from` the partial answer already ends with.
    pub(crate) skip: usize,
}

impl Resume {
    /// Starts `overlap` whole tokens earlier (instructed continuations only).
    pub(crate) fn repeating(mut self, overlap: u32) -> Self {
        if self.mode == Mode::Instruct && overlap > 0 {
            self.from = self.from.saturating_sub(overlap);
            self.skip = 0;
        }
        self
    }

    /// The text of content chunk `n` of the continuation.
    pub(crate) fn token(&self, n: u32) -> String {
        let token = format!("tok{} ", self.from.saturating_add(n));
        if n == 0 {
            token[self.skip.min(token.len())..].to_owned()
        } else {
            token
        }
    }

    /// Content chunks of a continuation of an answer of `tokens` tokens.
    pub(crate) fn chunks(&self, tokens: u32) -> u32 {
        tokens.saturating_sub(self.from)
    }

    /// For the request log.
    pub(crate) fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::Prefill => "prefill",
            Mode::Instruct => "instruct",
        };
        format!("{mode} from tok{}", self.from)
    }
}

/// The continuation a chat-shaped message list asks for (OpenAI's and
/// Anthropic's `messages`, Gemini's `contents` with `assistant` = "model").
pub(crate) fn detect(messages: &[Value], assistant: &str) -> Option<Resume> {
    fn role(m: &Value) -> &str {
        m.get("role").and_then(Value::as_str).unwrap_or_default()
    }
    let (last, before) = messages.split_last()?;
    let (mode, partial) = if role(last) == assistant {
        (Mode::Prefill, text(last))
    } else {
        let previous = before.last().filter(|m| role(m) == assistant)?;
        if !text(last).to_ascii_lowercase().contains("continue") {
            return None;
        }
        (Mode::Instruct, text(previous))
    };
    let (from, skip) = resume_point(&partial)?;
    Some(Resume { mode, from, skip })
}

/// The text of a message: a string, or its text blocks (or Gemini parts).
fn text(message: &Value) -> String {
    let content = message.get("content").or_else(|| message.get("parts"));
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// How many whole tokens of the sequence `partial` holds, and how many
/// bytes of the next one; `None` if it is not a prefix of the sequence.
pub(crate) fn resume_point(partial: &str) -> Option<(u32, usize)> {
    if partial.is_empty() {
        return None;
    }
    let mut rest = partial;
    let mut n = 0u32;
    loop {
        let token = format!("tok{n} ");
        if let Some(after) = rest.strip_prefix(token.as_str()) {
            rest = after;
            n += 1;
            continue;
        }
        return token.starts_with(rest).then_some((n, rest.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_prefill_continues_where_the_partial_answer_stops() {
        let messages = [
            json!({"role": "user", "content": "count"}),
            json!({"role": "assistant", "content": "tok0 tok1 tok2"}),
        ];
        let resume = detect(&messages, "assistant").unwrap();
        assert_eq!(resume.mode, Mode::Prefill);
        assert_eq!((resume.from, resume.skip), (2, 4));
        assert_eq!(resume.token(0), " ");
        assert_eq!(resume.token(1), "tok3 ");
        assert_eq!(resume.chunks(5), 3);
    }

    #[test]
    fn an_instructed_continuation_may_repeat_the_last_tokens() {
        let messages = [
            json!({"role": "user", "content": "count"}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "tok0 tok1 tok2 "}]}),
            json!({"role": "user", "content": "Continue it from exactly where it stops"}),
        ];
        let resume = detect(&messages, "assistant").unwrap().repeating(2);
        assert_eq!(resume.mode, Mode::Instruct);
        assert_eq!(resume.token(0), "tok1 ");
        assert_eq!(resume.describe(), "instruct from tok1");
    }

    #[test]
    fn other_conversations_are_not_continuations() {
        let plain = [json!({"role": "user", "content": "hi"})];
        assert!(detect(&plain, "assistant").is_none());
        let unrelated = [
            json!({"role": "assistant", "content": "hello there"}),
            json!({"role": "user", "content": "continue"}),
        ];
        assert!(detect(&unrelated, "assistant").is_none());
    }
}
