//! Virtual key secrets: generation, the format check, the visible lookup
//! prefix, SHA-256 and constant-time comparison. Pure functions, no I/O.
//!
//! A secret is `sy-` followed by the base62 digits of 32 random bytes (43
//! digits, least significant first so the visible prefix is uniformly
//! random; most-significant-first would start almost every key with `0` or
//! `1`). The first 8 digits after `sy-` are the lookup prefix, stored in
//! clear; the rest (~208 bits) is what makes the key secret.

use sha2::{Digest as _, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

pub const SCHEME: &str = "sy-";
const DIGITS: usize = 43;
pub const PREFIX_DIGITS: usize = 8;
/// `sy-` + 8 digits.
pub const PREFIX_LEN: usize = SCHEME.len() + PREFIX_DIGITS;
pub const SECRET_LEN: usize = SCHEME.len() + DIGITS;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub type Digest = [u8; 32];

/// A freshly issued secret: shown once, then only its prefix and hash are
/// kept. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// 32 bytes from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn generate() -> Secret {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut bytes);
        Secret(encode(bytes))
    }

    /// The secret itself. Call only to show it to its owner, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sy-` and the first 8 digits: safe to store and display.
    pub fn prefix(&self) -> &str {
        self.0.get(..PREFIX_LEN).unwrap_or(SCHEME)
    }

    pub fn digest(&self) -> Digest {
        digest(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}…)", self.prefix())
    }
}

fn encode(bytes: [u8; 32]) -> String {
    // The 256-bit number as eight big-endian 32-bit limbs, divided by 62
    // once per digit.
    let mut limbs = [0u32; 8];
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(4)) {
        *limb = chunk
            .iter()
            .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte));
    }
    let mut out = String::with_capacity(SECRET_LEN);
    out.push_str(SCHEME);
    for _ in 0..DIGITS {
        let mut remainder = 0u64;
        for limb in limbs.iter_mut() {
            let current = (remainder << 32) | u64::from(*limb);
            *limb = (current / 62) as u32;
            remainder = current % 62;
        }
        out.push(char::from(ALPHABET[remainder as usize]));
    }
    out
}

/// The lookup key of a presented secret, or `None` if it is not shaped
/// like one (wrong scheme, length or alphabet): such input never reaches
/// the cache or the store.
pub fn lookup_key(presented: &str) -> Option<PrefixKey> {
    let bytes = presented.as_bytes();
    if bytes.len() != SECRET_LEN || !presented.starts_with(SCHEME) {
        return None;
    }
    let digits = bytes.get(SCHEME.len()..)?;
    if !digits.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    PrefixKey::from_prefix(presented.get(..PREFIX_LEN)?)
}

/// The 8 prefix digits packed into a `u64`: a cheap map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixKey(u64);

impl PrefixKey {
    /// From a stored or presented prefix (`sy-` + 8 base62 digits).
    pub fn from_prefix(prefix: &str) -> Option<PrefixKey> {
        let digits = prefix.strip_prefix(SCHEME)?.as_bytes();
        if digits.len() != PREFIX_DIGITS || !digits.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        Some(PrefixKey(
            digits
                .iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)),
        ))
    }

    /// Back to `sy-` + 8 digits, for the store query.
    pub fn to_prefix(self) -> String {
        let mut out = String::with_capacity(PREFIX_LEN);
        out.push_str(SCHEME);
        for byte in self.0.to_be_bytes() {
            out.push(char::from(byte));
        }
        out
    }
}

pub fn digest(text: &str) -> Digest {
    Sha256::digest(text.as_bytes()).into()
}

/// Compares in time independent of where the digests differ.
pub fn digests_equal(a: &Digest, b: &Digest) -> bool {
    a.ct_eq(b).into()
}

pub fn to_hex(digest: &Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

/// `None` for anything that is not 64 hex digits.
pub fn from_hex(text: &str) -> Option<Digest> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let nibble = |c: &u8| char::from(*c).to_digit(16);
        let (hi, lo) = (nibble(pair.first()?)?, nibble(pair.get(1)?)?);
        *byte = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the digits back (least significant first) into bytes.
    fn decode(secret: &str) -> [u8; 32] {
        let mut limbs = [0u64; 8]; // big-endian 32-bit limbs held in u64
        for c in secret[SCHEME.len()..].bytes().rev() {
            let digit = ALPHABET.iter().position(|a| *a == c).unwrap() as u64;
            let mut carry = digit;
            for limb in limbs.iter_mut().rev() {
                let v = *limb * 62 + carry;
                *limb = v & 0xffff_ffff;
                carry = v >> 32;
            }
            assert_eq!(carry, 0, "overflow");
        }
        let mut out = [0u8; 32];
        for (i, limb) in limbs.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&(*limb as u32).to_be_bytes());
        }
        out
    }

    #[test]
    fn encoding_round_trips_and_has_a_fixed_shape() {
        for bytes in [[0u8; 32], [0xff; 32], {
            let mut b = [0u8; 32];
            b[31] = 61;
            b[0] = 7;
            b
        }] {
            let text = encode(bytes);
            assert_eq!(text.len(), SECRET_LEN);
            assert!(lookup_key(&text).is_some(), "{text}");
            assert_eq!(decode(&text), bytes);
        }
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("sy-"));
        assert_eq!(a.prefix().len(), PREFIX_LEN);
        assert!(!format!("{a:?}").contains(&a.expose()[PREFIX_LEN..]));
    }

    #[test]
    fn prefixes_vary_in_their_first_digit() {
        let firsts: std::collections::HashSet<u8> = (0..200)
            .map(|_| Secret::generate().expose().as_bytes()[SCHEME.len()])
            .collect();
        assert!(firsts.len() > 20, "{firsts:?}");
    }

    #[test]
    fn malformed_input_has_no_lookup_key() {
        let good = Secret::generate();
        let body = &good.expose()[SCHEME.len()..];
        for bad in [
            String::new(),
            "sy-".into(),
            "Bearer x".into(),
            format!("sk-{body}"),
            format!("{}x", good.expose()),
            good.expose()[..SECRET_LEN - 1].to_owned(),
            format!("sy-{}!", &body[1..]),
            // Multi-byte characters: same byte length, never sliced mid-char.
            format!("sy-{}é", &body[2..]),
            format!("sy-é{}", &body[2..]),
        ] {
            assert!(lookup_key(&bad).is_none(), "{bad:?}");
        }
        let key = lookup_key(good.expose()).unwrap();
        assert_eq!(key.to_prefix(), good.prefix());
        assert_eq!(PrefixKey::from_prefix(good.prefix()), Some(key));
    }

    #[test]
    fn hex_and_comparison() {
        let d = digest("sy-abc");
        assert_eq!(from_hex(&to_hex(&d)), Some(d));
        assert!(from_hex("zz").is_none());
        assert!(from_hex(&"g".repeat(64)).is_none());
        assert!(digests_equal(&d, &digest("sy-abc")));
        assert!(!digests_equal(&d, &digest("sy-abd")));
        // SHA-256 of "abc" (FIPS 180-2 test vector).
        assert_eq!(
            to_hex(&digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
