//! Logs: one structured line per request and per configuration change, as text or JSON. Filter
//! with `--log-level` or `RUST_LOG`. Secrets and prompt text are never logged: headers are
//! marked sensitive before anything can log them, and request bodies are not logged at all.
//!
//! Lines are written by a thread of their own, in batches: a request never waits on a write to
//! stderr (a pipe whose reader may be slow), and a busy gateway makes one write every
//! [`PERIOD`], not one per line, and wakes no thread per line; an idle one wakes no thread at
//! all (the writer sleeps until a line arrives). When the writer falls behind
//! by more than [`BACKLOG`] bytes, lines are dropped and counted
//! (`modelgate_log_lines_dropped_total`) rather than stalling the request path.

mod direct;
mod line;
pub(crate) mod traces;

pub(crate) use direct::info as info_line;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log lines waiting for the writer, at most.
const BACKLOG: usize = 8 << 20;
/// How often the writer wakes to write what is pending, while lines keep coming. Each wake
/// costs a context switch into a cold cache, so at a few hundred requests a second this, not
/// the writing, is most of the writer's CPU; 50 ms is still well under what a reader notices.
const PERIOD: Duration = Duration::from_millis(50);

/// Lines formatted and not yet written.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Held while a batch is taken and written, so batches reach stderr in order and a flush at
/// exit waits for a write in progress.
static WRITE: Mutex<()> = Mutex::new(());
static WRITER: OnceLock<()> = OnceLock::new();
/// Signalled when a line arrives while the writer sleeps on it ([`ASLEEP`]).
static ARRIVED: Condvar = Condvar::new();
/// Set (under [`PENDING`]'s lock) while the writer waits for a line: only then does a line
/// signal, so a busy gateway makes no system call per line.
static ASLEEP: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped because the writer could not keep up.
pub(crate) fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Writes every line logged so far, waiting (a bounded time, in case stderr is stuck) for a
/// write in progress: before exiting, after the start-up line, before a panic's message.
pub fn flush() {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match WRITE.try_lock() {
            Ok(_guard) => {
                write_batch(&mut Vec::new());
                return;
            }
            Err(std::sync::TryLockError::Poisoned(p)) => {
                let _guard = p.into_inner();
                write_batch(&mut Vec::new());
                return;
            }
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(std::sync::TryLockError::WouldBlock) => return,
        }
    }
}

/// Takes the pending lines (holding their lock only for the swap) and writes them; false when
/// there were none. The caller holds [`WRITE`].
fn write_batch(spare: &mut Vec<u8>) -> bool {
    spare.clear();
    std::mem::swap(
        &mut *PENDING.lock().unwrap_or_else(PoisonError::into_inner),
        spare,
    );
    if spare.is_empty() {
        return false;
    }
    let _ = std::io::stderr().lock().write_all(spare);
    true
}

/// Returns once a line is pending: an idle gateway's writer sleeps here, not in a period.
fn wait_for_lines() {
    let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
    while pending.is_empty() {
        ASLEEP.store(true, Ordering::Relaxed);
        pending = ARRIVED
            .wait(pending)
            .unwrap_or_else(PoisonError::into_inner);
    }
    ASLEEP.store(false, Ordering::Relaxed);
}

/// One event's bytes, appended to the pending lines when the formatter is done with them.
pub(crate) struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        if WRITER.get().is_none() {
            // No writer thread (it could not start): write it here.
            let _ = std::io::stderr().write_all(&self.0);
            return;
        }
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() + self.0.len() > BACKLOG {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.extend_from_slice(&self.0);
        // Read under the lock the writer sets it under, so a wait cannot miss this line.
        let wake = ASLEEP.load(Ordering::Relaxed);
        drop(pending);
        if wake {
            ARRIVED.notify_one();
        }
    }
}

/// Hands the formatter a [`Line`] per event.
pub(crate) struct Queued;

impl<'a> MakeWriter<'a> for Queued {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(512))
    }
}

/// Starts the writer thread, once.
fn start_writer() {
    if WRITER.get().is_some() {
        return;
    }
    let started = std::thread::Builder::new()
        .name("modelgate-log".into())
        .spawn(|| {
            let mut spare = Vec::new();
            loop {
                std::thread::sleep(PERIOD);
                let wrote = {
                    let _guard = WRITE.lock().unwrap_or_else(PoisonError::into_inner);
                    write_batch(&mut spare)
                };
                // Keep a burst's buffer from staying allocated for good.
                if spare.capacity() > 1 << 20 {
                    spare = Vec::new();
                }
                if !wrote {
                    wait_for_lines();
                }
            }
        });
    if started.is_ok() {
        let _ = WRITER.set(());
        // A panic's message goes straight to stderr: the lines before it go first.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flush();
            previous(info);
        }));
    }
}

/// The log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `level` is used when `RUST_LOG` is not set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},hyper=warn,reqwest=warn,h2=warn,rustls=warn"
        ))
    });
    start_writer();
    let result = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Queued)
        .fmt_fields(line::Fields)
        .event_format(line::Lines {
            json: format == LogFormat::Json,
        })
        .try_init();
    // A subscriber is already installed (tests): keep it, and log through it.
    if result.is_ok() {
        direct::install(format == LogFormat::Json);
    }
}
