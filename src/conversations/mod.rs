//! ④ Responses kept for `previous_response_id`: each stored response holds its conversation's
//! items up to its own output, the tenant it belongs to and the labels it was decided with, for
//! a configured time. In this process's memory (bounded, oldest forgotten first), or with a
//! `redis://` store in Redis, so every gateway of a fleet can continue or delete a
//! conversation. Redis is written in the background; until the write lands (or if it fails) the
//! response is also in memory, so a client that continues a response the moment it completes
//! finds it.

mod memory;
mod redis_store;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ResponsesSettings;

/// One stored response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// The tenant whose request made it: no other tenant can read, continue or delete it.
    pub(crate) tenant: String,
    /// The labels it was decided with; a continuation is decided with them too.
    pub(crate) labels: Vec<(String, String)>,
    /// The conversation's items, oldest first, this response's output last.
    pub(crate) items: Vec<Value>,
    /// Where this response's own input begins in `items`.
    pub(crate) input_at: usize,
    /// Where its output begins.
    pub(crate) output_at: usize,
    /// The response object, as `GET /v1/responses/{id}` returns it.
    pub(crate) response: Value,
}

/// Why a stored response could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConversationError {
    #[error("no response with id '{0}' is stored for this tenant")]
    NotFound(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the response store cannot be reached: {0}")]
    Unavailable(String),
}

/// Where stored responses are kept.
pub(crate) struct Conversations {
    memory: Arc<memory::MemoryStore>,
    redis: Option<redis_store::RedisStore>,
    settings: ResponsesSettings,
}

impl Conversations {
    /// The store `settings` describe (Redis is connected to on first use).
    pub(crate) fn new(settings: &ResponsesSettings) -> Result<Arc<Conversations>, String> {
        let redis = match settings.store.as_str() {
            "memory" => None,
            url => Some(redis_store::RedisStore::new(url)?),
        };
        Ok(Arc::new(Conversations {
            memory: Arc::new(memory::MemoryStore::new(settings.memory_bytes)),
            redis,
            settings: settings.clone(),
        }))
    }

    /// The response `id` of `tenant`: another tenant's is not found, like one that never was.
    pub(crate) async fn get(&self, tenant: &str, id: &str) -> Result<Stored, ConversationError> {
        let bytes = match self.memory.get(id) {
            Some(b) => Some(b),
            None => match &self.redis {
                Some(r) => r.get(id).await?,
                None => None,
            },
        };
        let stored: Option<Stored> = bytes.and_then(|b| serde_json::from_slice(&b).ok());
        match stored {
            Some(s) if s.tenant == tenant => Ok(s),
            _ => Err(ConversationError::NotFound(crate::base::printable(id))),
        }
    }

    /// Checks that a conversation of `items` fits the configured bounds.
    pub(crate) fn check(&self, items: &[Value]) -> Result<(), ConversationError> {
        if items.len() > self.settings.max_items {
            return Err(ConversationError::TooLarge(format!(
                "the conversation would hold {} items, more than the {} a stored conversation may hold",
                items.len(),
                self.settings.max_items
            )));
        }
        Ok(())
    }

    /// Keeps `stored` as response `id`. Over the size bound nothing is kept.
    pub(crate) fn put(&self, id: &str, stored: &Stored) -> Result<(), ConversationError> {
        let bytes = serde_json::to_vec(stored).unwrap_or_default();
        if bytes.len() > self.settings.max_bytes {
            return Err(ConversationError::TooLarge(format!(
                "the conversation holds {} bytes, more than the {} a stored conversation may hold",
                bytes.len(),
                self.settings.max_bytes
            )));
        }
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let seq = self.memory.put(id, bytes.clone(), self.settings.ttl);
        if let Some(r) = &self.redis {
            // Once Redis has it, Redis is where it lives: a delete through any gateway of the
            // fleet then deletes it for all.
            let (memory, key) = (self.memory.clone(), id.to_owned());
            r.put(id, bytes, self.settings.ttl, move || {
                memory.forget(&key, seq)
            });
        }
        Ok(())
    }

    /// Forgets response `id` of `tenant`.
    pub(crate) async fn delete(&self, tenant: &str, id: &str) -> Result<(), ConversationError> {
        self.get(tenant, id).await?;
        self.memory.delete(id);
        if let Some(r) = &self.redis {
            r.delete(id).await?;
        }
        Ok(())
    }

    /// The bytes a conversation may hold.
    pub(crate) fn max_bytes(&self) -> usize {
        self.settings.max_bytes
    }
}

/// Kept for `ttl` from now.
fn expiry(ttl: Duration) -> std::time::Instant {
    std::time::Instant::now() + ttl
}
