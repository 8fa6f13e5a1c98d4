//! ② Client keys: stored as SHA-256 digests, looked up by digest and confirmed in constant
//! time. A key is never kept, logged or compared as text.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The non-secret id of the key used, if any.
    pub(crate) key_id: Option<Arc<str>>,
    pub(crate) tenant: Arc<str>,
    /// The policy the key names, if any.
    pub(crate) policy: Option<Arc<str>>,
    /// The policy its requests are also decided by without being routed by it (a shadow), as
    /// its position among the configuration's policies, found at load: none when it has no
    /// shadow, or when the shadow is its own policy.
    pub(crate) shadow: Option<usize>,
    /// Labels the key always carries (its tenant's included).
    pub(crate) labels: Arc<[(String, String)]>,
    /// The key's and the tenant's limits, where they have any.
    pub(crate) limits: Arc<[crate::config::scopes::Scope]>,
    /// When the key stops working (seconds since the epoch).
    pub(crate) expires: Option<u64>,
    /// The digest of the key presented, so that a request can find its caller again in a
    /// newer configuration (a reload may have changed or revoked the key).
    pub(crate) digest: Option<KeyDigest>,
}

/// A key's SHA-256, never printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyDigest([u8; 32]);

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest(..)")
    }
}

impl Caller {
    /// The caller of a gateway that runs without keys.
    pub fn anonymous() -> Caller {
        Caller {
            key_id: None,
            tenant: Arc::from("default"),
            policy: None,
            shadow: None,
            labels: Arc::from(Vec::new()),
            limits: Arc::from(Vec::new()),
            expires: None,
            digest: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
}

/// The configured keys, by digest.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyStore {
    by_digest: HashMap<[u8; 32], Entry>,
}

impl KeyStore {
    /// Adds a key by its hex digest. Errors on a malformed or duplicate digest.
    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        id: &str,
        tenant: &str,
        sha256_hex: &str,
    ) -> Result<(), String> {
        self.insert_caller(
            sha256_hex,
            Caller {
                key_id: Some(Arc::from(id)),
                tenant: Arc::from(tenant),
                policy: None,
                shadow: None,
                labels: Arc::from(Vec::new()),
                limits: Arc::from(Vec::new()),
                expires: None,
                digest: None,
            },
        )
    }

    /// Adds a key by its hex digest for a fully described caller.
    pub(crate) fn insert_caller(
        &mut self,
        sha256_hex: &str,
        mut caller: Caller,
    ) -> Result<(), String> {
        let digest = parse_hex32(sha256_hex).ok_or_else(|| {
            "must be 64 hexadecimal characters (the SHA-256 of the key)".to_owned()
        })?;
        if self.by_digest.contains_key(&digest) {
            return Err("the same key is configured twice".into());
        }
        caller.digest = Some(KeyDigest(digest));
        self.by_digest.insert(digest, Entry { digest, caller });
        Ok(())
    }

    /// The caller of the key with this (non-secret) id, for `modelgate explain`.
    pub(crate) fn by_id(&self, id: &str) -> Option<&Caller> {
        self.by_digest
            .values()
            .map(|e| &e.caller)
            .find(|c| c.key_id.as_deref() == Some(id))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Every key's caller, in no particular order.
    pub(crate) fn callers(&self) -> impl Iterator<Item = &Caller> {
        self.by_digest.values().map(|e| &e.caller)
    }

    /// The caller of the same key as `caller` in these keys, if it is still here.
    pub(crate) fn again(&self, caller: &Caller) -> Option<&Caller> {
        let digest = caller.digest?.0;
        let entry = self.by_digest.get(&digest)?;
        bool::from(entry.digest.ct_eq(&digest)).then_some(&entry.caller)
    }

    /// The caller a presented key belongs to.
    pub(crate) fn authenticate(&self, presented: &[u8]) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let entry = self.by_digest.get(&digest)?;
        // The map lookup already matched; the constant-time check keeps the final comparison
        // free of early exits whatever the map does internally.
        bool::from(entry.digest.ct_eq(&digest)).then_some(&entry.caller)
    }
}

/// The SHA-256 of a key, as hex.
pub fn hash_hex(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// A fresh key: `mg-` and 256 random bits, URL-safe.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw)?;
    Ok(format!("mg-{}", base64url(&raw)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        let chars = c.len() + 1;
        for i in 0..chars {
            s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

impl super::Config {
    /// The caller of requests without a key, as this configuration makes it: its tenant's
    /// labels and limits, and the policies that decide and shadow its requests.
    pub fn anonymous_caller(&self) -> &Caller {
        &self.anonymous
    }

    /// The caller of a request that began under an older configuration, as this one sees it:
    /// the same key's caller now (its policy, labels and tenant as reloaded), or `None` when
    /// the key was revoked or expired, or the gateway now asks for keys that the request did
    /// not bring.
    pub(crate) fn caller_again(&self, caller: &Caller) -> Option<Caller> {
        if !self.auth_required {
            return Some(self.anonymous.clone());
        }
        let now = self.keys.again(caller)?;
        if now.expires.is_some_and(|at| crate::base::unix_now() >= at) {
            return None;
        }
        Some(now.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_by_digest_only() {
        let key = generate().unwrap();
        assert!(key.starts_with("mg-") && key.len() == 46, "{key}");
        let mut store = KeyStore::default();
        store.insert("app", "team-a", &hash_hex(&key)).unwrap();
        assert_eq!(
            store.authenticate(key.as_bytes()).unwrap().tenant.as_ref(),
            "team-a"
        );
        assert!(store.authenticate(b"mg-wrong").is_none());
        assert!(store.authenticate(b"' OR '1'='1").is_none());
        assert!(store.insert("again", "t", &hash_hex(&key)).is_err());
        assert!(store.insert("bad", "t", "xyz").is_err());
        assert!(store.insert("bad", "t", &"g".repeat(64)).is_err());
    }

    #[test]
    fn known_digest() {
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn two_keys_differ() {
        assert_ne!(generate().unwrap(), generate().unwrap());
    }
}
