//! ⑤ Upstream error text is passed on only after removing what could carry a secret: key-like
//! tokens, the deployment's own key, control characters, and anything past a short length.

use crate::config::Deployment;
use crate::config::secret::Masks;

/// Longest upstream message passed on, in characters.
const MAX_CHARS: usize = 500;

/// What a secret is replaced by.
const REDACTED: &str = "[redacted]";

/// Cleans an upstream error message for the client and the log, masking the deployment's own
/// key in every encoding. Every path that passes on upstream text goes through here.
pub(crate) fn clean_message(message: &str, d: &Deployment) -> String {
    clean(message, &d.endpoint.masks)
}

/// Cleans text: first the exact secrets in all their forms, over the whole text (a cut first
/// could leave half a key that no longer matches), then control characters and every token
/// that looks like a key, and only then the cut.
pub(crate) fn clean(message: &str, secrets: &Masks) -> String {
    let masked = secrets.mask(message, REDACTED);
    let mut out = String::with_capacity(masked.len().min(MAX_CHARS * 4));
    let plain = masked.replace(|c: char| c.is_control(), " ");
    for (i, word) in plain.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if looks_like_key(word) {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
    }
    match out.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => out[..at].to_owned(),
        None => out,
    }
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
    use crate::config::secret::Secret;

    #[test]
    fn keys_are_masked() {
        let m =
            "Incorrect API key provided: sk-canary-1234abcd. You can find your key at https://x";
        let none = Masks::default();
        let c = clean(m, &none);
        assert!(!c.contains("canary"), "{c}");
        assert!(c.contains("Incorrect API key provided"));
        let c = clean(
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0 bad",
            &none,
        );
        assert!(!c.contains("eyJ"), "{c}");
        let secret = Masks::of(&[&Secret::new("plainwordsecret".into())]);
        let c = clean("my secret is plainwordsecret", &secret);
        assert!(!c.contains("plainwordsecret"), "{c}");
        let c = clean("line\nbreak\u{0}nul", &none);
        assert!(!c.contains('\n') && !c.contains('\0'));
        assert_eq!(clean(&"x".repeat(2000), &none).len(), MAX_CHARS);
        // Ordinary words, model names and numbers stay.
        let c = clean("model llama-3.1-8b-instruct context 8192 exceeded", &none);
        assert_eq!(c, "model llama-3.1-8b-instruct context 8192 exceeded");
    }
}

#[cfg(test)]
mod straddle {
    use super::*;
    use crate::config::secret::Secret;

    /// A key that the cut would split is masked whole: masking comes before the cut.
    #[test]
    fn a_key_across_the_cut_is_masked_whole() {
        let key = "plainsecretwordsonlyletters";
        let masks = Masks::of(&[&Secret::new(key.into())]);
        for at in MAX_CHARS - key.len()..MAX_CHARS + 2 {
            for form in [
                key.to_owned(),
                format!("Bearer%20{key}"),
                format!("?key={key}"),
            ] {
                let msg = format!(
                    "{}{form} trailing",
                    "a ".repeat(at / 2) + &"b".repeat(at % 2)
                );
                let c = clean(&msg, &masks);
                for n in 4..=key.len() {
                    assert!(!c.contains(&key[..n]), "{n} chars at {at}: {c}");
                }
            }
        }
    }
}
