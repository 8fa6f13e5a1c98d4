//! A secret (provider key) held so that it cannot be printed: `Debug` and `Display` show a
//! placeholder and there is no `Serialize`.

use std::fmt;

/// An API key or other secret, read from an environment variable or a file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself, for building the one header that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// Every form in which a secret could come back in an upstream's error text: as it is, URL-
/// (percent- and form-) encoded with either case of hex digits, JSON-escaped, and in base64.
/// Made once when the configuration loads (and cheap to clone); masking uses them longest
/// first.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Masks(std::sync::Arc<[Box<str>]>);

impl Masks {
    /// Shorter secrets are not masked by value: they would mask ordinary words.
    const MIN_LEN: usize = 4;

    pub(crate) fn of(secrets: &[&Secret]) -> Masks {
        let mut forms: Vec<Box<str>> = Vec::new();
        for s in secrets {
            let k = s.expose();
            if k.len() < Self::MIN_LEN {
                continue;
            }
            let upper = percent_encode(k, false, true);
            let candidates = [
                k.to_owned(),
                upper.clone(),
                percent_encode(k, false, false),
                upper.to_ascii_lowercase(),
                percent_encode(k, true, true),
                percent_encode(k, true, false),
                // Everything escaped, as an over-eager encoder does.
                k.bytes().map(|b| format!("%{b:02X}")).collect(),
                k.bytes().map(|b| format!("%{b:02x}")).collect(),
                serde_json::to_string(k)
                    .map(|j| j.trim_matches('"').replace('/', "\\/"))
                    .unwrap_or_default(),
                serde_json::to_string(k)
                    .map(|j| j.trim_matches('"').to_owned())
                    .unwrap_or_default(),
                base64(k.as_bytes(), false),
                base64(k.as_bytes(), true),
            ];
            for c in candidates {
                if c.len() >= Self::MIN_LEN && !forms.iter().any(|f| **f == *c) {
                    forms.push(c.into());
                }
            }
        }
        // Longest first, so a form that contains another is masked whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        Masks(forms.into())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces every occurrence of every form with `with`.
    pub(crate) fn mask(&self, text: &str, with: &str) -> String {
        let mut s = text.to_owned();
        for f in self.0.iter() {
            if s.contains(&**f) {
                s = s.replace(&**f, with);
            }
        }
        s
    }
}

impl fmt::Debug for Masks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masks({} forms)", self.0.len())
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters; `form` writes a space as `+`.
fn percent_encode(s: &str, form: bool, upper: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char);
            }
            b' ' if form => out.push('+'),
            _ if upper => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// Base64 without padding (a key inside a longer base64 text ends without it).
fn base64(bytes: &[u8], url_safe: bool) -> String {
    let table: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(table[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(*****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("sk-canary-123".into());
        assert!(!format!("{s:?} {s}").contains("canary"));
        assert_eq!(s.expose(), "sk-canary-123");
    }

    #[test]
    fn masks_cover_every_encoding() {
        let s = Secret::new("sk-ca/na+ry key=1".into());
        let m = Masks::of(&[&s]);
        for text in [
            "sk-ca/na+ry key=1",
            "sk-ca%2Fna%2Bry%20key%3D1",
            "sk-ca%2fna%2bry%20key%3d1",
            "sk-ca%2Fna%2Bry+key%3D1",
            "sk-ca\\/na+ry key=1",
            "c2stY2EvbmErcnkga2V5PTE",
        ] {
            let out = m.mask(&format!("x {text} y"), "[redacted]");
            assert_eq!(out, "x [redacted] y", "{text}");
        }
        assert!(format!("{m:?}").starts_with("Masks("));
        assert!(Masks::of(&[&Secret::new("abc".into())]).is_empty());
        assert_eq!(base64(b"any carnal pleas", false), "YW55IGNhcm5hbCBwbGVhcw");
    }
}
