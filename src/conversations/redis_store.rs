//! Stored responses in Redis, shared by every gateway that names the same store: one key per
//! response (`modelgate:response:<id>`) with the response's lifetime as its TTL.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::ConversationError;

/// How long a call to Redis may take before the store counts as unreachable.
const TIMEOUT: Duration = Duration::from_millis(500);

pub(super) struct RedisStore {
    client: redis::Client,
    conn: OnceLock<ConnectionManager>,
}

fn key(id: &str) -> String {
    format!("modelgate:response:{id}")
}

fn unavailable(e: impl std::fmt::Debug) -> ConversationError {
    ConversationError::Unavailable(format!("redis: {e:?}"))
}

impl RedisStore {
    pub(super) fn new(url: &str) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
        Ok(RedisStore {
            client,
            conn: OnceLock::new(),
        })
    }

    fn conn(&self) -> Result<ConnectionManager, ConversationError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let c = crate::limits::redis_store::lazy_connection(&self.client)
            .map_err(|e| unavailable(e.kind()))?;
        Ok(self.conn.get_or_init(|| c).clone())
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<Arc<[u8]>>, ConversationError> {
        let mut conn = self.conn()?;
        let got: Option<Vec<u8>> = tokio::time::timeout(TIMEOUT * 2, conn.get(key(id)))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(|e| unavailable(e.kind()))?;
        Ok(got.map(Arc::from))
    }

    /// Writes in the background: the answer does not wait for Redis, and this gateway reads
    /// its own write from memory meanwhile. `written` is told when Redis has it.
    pub(super) fn put(
        &self,
        id: &str,
        bytes: Arc<[u8]>,
        ttl: Duration,
        written: impl FnOnce() + Send + 'static,
    ) {
        let Ok(mut conn) = self.conn() else {
            tracing::warn!(
                "response store: cannot reach Redis; the response is kept in memory only"
            );
            return;
        };
        let (key, ms) = (
            key(id),
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
        );
        tokio::spawn(async move {
            let write = conn.pset_ex::<_, _, ()>(key, &bytes[..], ms);
            match tokio::time::timeout(TIMEOUT * 2, write).await {
                Ok(Ok(())) => written(),
                Ok(Err(e)) => {
                    tracing::warn!(error = ?e.kind(), "response store: Redis refused a write; kept in memory only")
                }
                Err(_) => {
                    tracing::warn!("response store: a Redis write timed out; kept in memory only")
                }
            }
        });
    }

    pub(super) async fn delete(&self, id: &str) -> Result<(), ConversationError> {
        let mut conn = self.conn()?;
        tokio::time::timeout(TIMEOUT * 2, conn.del::<_, ()>(key(id)))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(|e| unavailable(e.kind()))
    }
}
