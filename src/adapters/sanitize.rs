//! ⑤ Upstream error text is passed on only after removing what could carry a secret: key-like
//! tokens, the deployment's own key, control characters, and anything past a short length.

use crate::config::Deployment;

/// Longest upstream message passed on, in characters.
const MAX_CHARS: usize = 500;

/// Cleans an upstream error message for the client, also masking the deployment's own key.
pub fn clean_message(message: &str, d: &Deployment) -> String {
    let key = d
        .endpoint
        .auth_header
        .as_ref()
        .and_then(|(_, v)| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v));
    clean(message, key)
}

/// Cleans text: the exact `secret` if given, then every token that looks like a key.
pub fn clean(message: &str, secret: Option<&str>) -> String {
    let mut s: String = message
        .chars()
        .take(MAX_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if let Some(k) = secret.filter(|k| k.len() >= 4) {
        s = s.replace(k, "[redacted]");
    }
    let mut out = String::with_capacity(s.len());
    for (i, word) in s.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if looks_like_key(word) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
    }
    out
}

/// A token that could be a credential: a known key prefix, or a long run of letters and digits
/// with both in it (keys, JWT segments, bearer tokens). Model names such as
/// `llama-3.1-8b-instruct` have short runs between their separators and stay.
fn looks_like_key(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    for prefix in [
        "sk-", "sk_", "mg-", "AIza", "xoxb-", "ghp_", "hf_", "key-", "gsk_",
    ] {
        if w.starts_with(prefix) && w.len() > prefix.len() + 3 {
            return true;
        }
    }
    w.split(|c: char| !c.is_ascii_alphanumeric()).any(|run| {
        run.len() >= 16
            && run.bytes().any(|b| b.is_ascii_digit())
            && run.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked() {
        let m =
            "Incorrect API key provided: sk-canary-1234abcd. You can find your key at https://x";
        let c = clean(m, None);
        assert!(!c.contains("canary"), "{c}");
        assert!(c.contains("Incorrect API key provided"));
        let c = clean(
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0 bad",
            None,
        );
        assert!(!c.contains("eyJ"), "{c}");
        let c = clean("my secret is plainwordsecret", Some("plainwordsecret"));
        assert!(!c.contains("plainwordsecret"), "{c}");
        let c = clean("line\nbreak\u{0}nul", None);
        assert!(!c.contains('\n') && !c.contains('\0'));
        assert_eq!(clean(&"x".repeat(2000), None).len(), MAX_CHARS);
        // Ordinary words, model names and numbers stay.
        let c = clean("model llama-3.1-8b-instruct context 8192 exceeded", None);
        assert_eq!(c, "model llama-3.1-8b-instruct context 8192 exceeded");
    }
}
