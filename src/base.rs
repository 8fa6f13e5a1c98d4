//! Shared primitives, below everything else: the clock, fresh ids and hex, decimal digits,
//! text fit to echo, and JSON read from bytes. Nothing here knows about requests, models or
//! configuration.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// JSON from bytes, checked for UTF-8 once as a whole: read from bytes, serde_json checks each
/// string it meets on its own, which costs more than one pass over a small body. Invalid UTF-8
/// is read from the bytes, for serde_json's own error with its position.
pub(crate) fn json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// A hash map for keys that the configuration or the gateway makes (names, ids, durations), never
/// for keys a client can choose to insert: FxHash costs a tenth of SipHash on short keys, and
/// SipHash's defence is against collisions crafted among inserted keys. A client's string may
/// still be looked up in one.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

/// `make()`'s value in a box allocated before it is made, so that the compiler builds it in the
/// box. `Box::new(make())` builds it on the stack and copies every byte of its type into the
/// box: for a future, the size of its largest state, though only its arguments are set yet (1.3
/// KB for an upstream attempt's, read and written again on the way to every first token). It
/// cannot help where the maker itself copies the value whole, as `pipeline::chat::serve` did
/// with the chat endpoint's 2 KB future on 33915d7's build (not on e276086's: whether it does
/// is the inliner's choice, and shows in `benches/profile/footprint.sh`'s trace).
#[inline(always)]
pub(crate) fn boxed<T>(make: impl FnOnce() -> T) -> Box<T> {
    let slot = Box::<T>::new_uninit();
    Box::write(slot, make())
}

/// [`boxed`], pinned: a future to be polled where it was made.
#[inline(always)]
pub(crate) fn pinned<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(boxed(make))
}

/// Runs `work` to its end; if it has to wait, runs `meanwhile` while it does, and gives its
/// value too (`None` when `work` was done at once). `meanwhile` runs once the runtime has polled
/// the tasks `work` woke (a connection's, writing the request it was handed): work for after
/// the answer, done while the answer is on its way rather than after it comes.
pub(crate) async fn meanwhile<F: std::future::Future, P>(
    mut work: std::pin::Pin<&mut F>,
    meanwhile: impl FnOnce() -> P,
) -> (F::Output, Option<P>) {
    use std::task::Poll;
    let mut waited = false;
    let done = std::future::poll_fn(|cx| {
        if waited {
            return Poll::Ready(None);
        }
        match work.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => {
                // A task woken while it runs goes to the back of the run queue on either
                // runtime, behind the tasks it woke; unlike `yield_now`, without a turn of the
                // I/O driver first (a system call and 900 instructions).
                waited = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    })
    .await;
    if let Some(out) = done {
        return (out, None);
    }
    let made = meanwhile();
    (work.await, Some(made))
}

static SEED: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh id: 32 hex characters, unique within the process and unpredictable across runs.
pub(crate) fn fresh_id() -> String {
    // Hex digits are ASCII: the check cannot fail.
    String::from_utf8(fresh_id_bytes().to_vec()).unwrap_or_default()
}

/// [`fresh_id`]'s characters, for a header value made from them without a `String` between.
pub(crate) fn fresh_id_bytes() -> [u8; 32] {
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without entropy the ids are still unique within the process, which is what matters.
        let _ = getrandom::getrandom(&mut b);
        u64::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = splitmix(seed ^ n);
    let mut id = [0u8; 32];
    hex_into(&mut id[..16], a);
    hex_into(&mut id[16..], splitmix(a ^ seed.rotate_left(32)));
    id
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes the low `out.len()` hex digits of `n` into `out`, most significant first.
fn hex_into(out: &mut [u8], n: u64) {
    let last = out.len().saturating_sub(1);
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[(n >> ((last - i) * 4)) as usize & 0xf];
    }
}

/// Appends `n` as 16 lowercase hex digits: what `{n:016x}` writes, without `format!`'s
/// machinery on every request.
pub(crate) fn push_hex(out: &mut String, n: u64) {
    let mut digits = [0u8; 16];
    hex_into(&mut digits, n);
    out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes `n` into `out` as decimal digits, zero-padded on the left.
pub(crate) fn digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Text from a request, safe to echo in an error message: short, printable.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// (year, month 1–12, day 1–31) of a day number since the epoch (Howard Hinnant's algorithm).
pub(crate) fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Seconds since the epoch at the start of a UTC day written `2027-01-31`.
pub(crate) fn day_start(date: &str) -> Option<u64> {
    let mut it = date.trim().splitn(3, '-');
    let y: u64 = it.next()?.parse().ok()?;
    let m: u64 = it.next()?.parse().ok()?;
    let d: u64 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mp) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

pub(crate) fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        _ => 28,
    }
}

/// What unit tests of several modules share.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory, removed with its files when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        /// `modelgate-<what>-<pid>-<n>` in the temporary directory, empty.
        pub(crate) fn new(what: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "modelgate-{what}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            // A process of the same id (ids are reused) may have left one behind.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hex_and_digits() {
        let (a, b) = (fresh_id(), fresh_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let mut s = String::new();
        push_hex(&mut s, 0xab);
        assert_eq!(s, "00000000000000ab");
        let mut d = [0u8; 4];
        digits(&mut d, 42);
        assert_eq!(&d, b"0042");
        assert_eq!(printable("a\u{0}b"), "a?b");
    }

    #[tokio::test]
    async fn meanwhile_is_not_run_for_work_done_at_once() {
        let (out, made) = meanwhile(std::pin::pin!(async { 1 }), || unreachable!()).await;
        assert_eq!((out, made), (1, None::<()>));
    }

    /// The connection's task stands for the one a request is handed to: it runs (writes the
    /// request) before what is made meanwhile, and what it answers is awaited after.
    async fn runs_after_the_tasks_the_work_woke() {
        use std::sync::{Arc, Mutex};
        let order = Arc::new(Mutex::new(Vec::new()));
        let (hand, handed) = tokio::sync::oneshot::channel::<()>();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let seen = order.clone();
        tokio::spawn(async move {
            handed.await.unwrap();
            seen.lock().unwrap().push("connection");
            answer.send(5).unwrap();
        });
        let work = async move {
            hand.send(()).unwrap();
            answered.await.unwrap()
        };
        let (out, made) = meanwhile(std::pin::pin!(work), || {
            order.lock().unwrap().push("meanwhile");
            7
        })
        .await;
        assert_eq!((out, made), (5, Some(7)));
        assert_eq!(*order.lock().unwrap(), ["connection", "meanwhile"]);
    }

    #[tokio::test]
    async fn meanwhile_runs_after_the_tasks_the_work_woke() {
        runs_after_the_tasks_the_work_woke().await;
    }

    /// On the threaded runtime, as a task on its one worker (as requests run).
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn meanwhile_runs_after_the_tasks_the_work_woke_on_a_worker() {
        tokio::spawn(runs_after_the_tasks_the_work_woke())
            .await
            .unwrap();
    }
}
