//! A secret (provider key) held so that it cannot be printed: `Debug` and `Display` show a
//! placeholder and there is no `Serialize`.

use std::fmt;

/// An API key or other secret, read from an environment variable or a file.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself, for building the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
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
}
