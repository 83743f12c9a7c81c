//! Masking upstream credentials in text that came from an upstream (error
//! messages) before a client or a log sees it. Providers echo keys, whole or
//! masked, in some error messages ("Incorrect API key provided: sk-…").

use std::borrow::Cow;

pub const MASK: &str = "[redacted]";

/// Longest upstream error message passed on; the rest is cut.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Masks key-shaped tokens: OpenAI and Anthropic `sk-…` (also half-masked
/// ones such as `sk-proj-****abcd`), Google `AIza…`, and runs of 32 or more
/// hex digits (Azure keys). A token is a run of letters, digits, `-`, `_`
/// and `*`.
pub fn key_shaped(message: &str) -> Cow<'_, str> {
    let is_token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*');
    if !tokens(message, is_token).any(|(_, t)| looks_like_key(t)) {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut last = 0;
    for (start, token) in tokens(message, is_token) {
        if looks_like_key(token) {
            out.push_str(&message[last..start]);
            out.push_str(MASK);
            last = start + token.len();
        }
    }
    out.push_str(&message[last..]);
    Cow::Owned(out)
}

fn tokens(s: &str, is_token: impl Fn(char) -> bool + Copy) -> impl Iterator<Item = (usize, &str)> {
    s.split(move |c: char| !is_token(c))
        .filter(|t| !t.is_empty())
        .map(move |t| (t.as_ptr() as usize - s.as_ptr() as usize, t))
}

fn looks_like_key(token: &str) -> bool {
    (token.starts_with("sk-") && token.len() >= 8)
        || token.starts_with("AIza")
        || (token.len() >= 32 && token.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Replaces every occurrence of `secret` (the key the attempt sent) in an
/// error body the gateway built from upstream text.
pub fn known(body: bytes::Bytes, secret: &[u8]) -> bytes::Bytes {
    // Shorter "keys" (test setups) would mask ordinary words.
    if secret.len() < 8 || memchr::memmem::find(&body, secret).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = memchr::memmem::find(rest, secret) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(MASK.as_bytes());
        rest = &rest[at + secret.len()..];
    }
    out.extend_from_slice(rest);
    bytes::Bytes::from(out)
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    s.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shaped_tokens_are_masked() {
        for (input, want) in [
            (
                "Incorrect API key provided: sk-proj-abc123XYZ. You can find your API key at https://x.",
                "Incorrect API key provided: [redacted]. You can find your API key at https://x.",
            ),
            ("key sk-upst*****************f4e rejected", "key [redacted] rejected"),
            ("Key AIzaSyAbCd, also AIza.", "Key [redacted], also [redacted]."),
            (
                "Access denied due to invalid subscription key 0123456789abcdef0123456789abcdef.",
                "Access denied due to invalid subscription key [redacted].",
            ),
            ("model gpt-4o-mini not found; ask-me", "model gpt-4o-mini not found; ask-me"),
            ("sk-1 is short", "sk-1 is short"),
        ] {
            assert_eq!(key_shaped(input), want, "{input}");
        }
    }

    #[test]
    fn a_known_key_is_masked_wherever_it_appears() {
        let body = bytes::Bytes::from_static(b"{\"m\":\"bad key plainsecret99 (plainsecret99)\"}");
        assert_eq!(
            &known(body.clone(), b"plainsecret99")[..],
            b"{\"m\":\"bad key [redacted] ([redacted])\"}"
        );
        assert_eq!(known(body.clone(), b"short"), body);
    }
}
