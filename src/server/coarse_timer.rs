//! hyper's timer for HTTP/1 connections. Its one use there is the header-read timeout: armed
//! when a connection starts waiting for a request's head, dropped when the head is in, so once
//! per request. Through tokio's timer that was a box, a registration and a removal under the
//! time driver's lock (~800 instructions a request) for a limit almost never reached. Here a
//! sleep is a slot in a table that the pacemaker sweeps on each of its ticks: it fires on the
//! first tick past its deadline, up to one tick late (a guard against slow clients, not a
//! clock; the tick is a tenth of the timeout, at most a second).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The sleeps waiting, for the pacemaker to wake when their deadline passes.
#[derive(Default)]
pub(super) struct Sweep {
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
}

struct Entry {
    deadline: Instant,
    waker: Waker,
}

impl Sweep {
    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every sleep whose deadline has passed; each takes itself out when polled.
    pub(super) fn wake_due(&self) {
        let now = now();
        for e in self.slots().entries.iter().flatten() {
            if e.deadline <= now {
                e.waker.wake_by_ref();
            }
        }
    }
}

/// Tokio's clock, so that tests with paused time see these sleeps as they see tokio's.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How many reads a connection has made: its timer tells a head that has begun to arrive from
/// a connection still idle by whether the count moved since it was armed.
#[derive(Default)]
pub(crate) struct Reads(AtomicU64);

impl Reads {
    pub(crate) fn one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The timer handed to hyper's HTTP/1 connections.
///
/// hyper arms its header-read timeout whenever a connection waits for a head, the wait between
/// two requests on a kept-alive connection too: alone, it would close every connection idle
/// for that long (10 s by default), and a client reusing one just then would lose the request
/// it sent on it (a POST is not retried). A connection's own timer (`for_connection`) keeps an
/// idle connection for `idle` instead, and gives a head the header-read timeout from when its
/// first bytes are read.
#[derive(Clone)]
pub(super) struct CoarseTimer {
    sweep: Arc<Sweep>,
    /// The connection's reads, the header-read timeout and the idle timeout.
    idle: Option<(Arc<Reads>, Duration, Duration)>,
}

impl CoarseTimer {
    /// Every wait is the header-read timeout (the admin listener's connections).
    pub(super) fn new(sweep: Arc<Sweep>) -> CoarseTimer {
        CoarseTimer { sweep, idle: None }
    }

    /// One connection's, whose reads are counted in `reads`; `head` is the header-read
    /// timeout hyper arms it with.
    pub(super) fn for_connection(
        &self,
        reads: Arc<Reads>,
        head: Duration,
        idle: Duration,
    ) -> CoarseTimer {
        CoarseTimer {
            sweep: self.sweep.clone(),
            idle: Some((reads, head, idle)),
        }
    }
}

/// A far deadline for a duration too long to add: no limit within the process' life.
fn after(start: Instant, d: Duration) -> Instant {
    start + d.min(Duration::from_secs(86_400 * 365 * 30))
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(after(now(), duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let mut sleep = CoarseSleep {
            sweep: self.sweep.clone(),
            deadline,
            slot: None,
            idle: self.idle.as_ref().map(|(reads, head, idle)| Idle {
                reads: reads.clone(),
                head: *head,
                idle: *idle,
                seen: 0,
                head_begun: false,
            }),
        };
        sleep.reset(deadline);
        Box::pin(sleep)
    }

    fn now(&self) -> Instant {
        now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut s) => s.as_mut().get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

struct CoarseSleep {
    sweep: Arc<Sweep>,
    deadline: Instant,
    /// Its place in the table, once polled.
    slot: Option<usize>,
    /// A connection's own wait for a head: idle until its first bytes.
    idle: Option<Idle>,
}

struct Idle {
    reads: Arc<Reads>,
    idle: Duration,
    /// The connection's reads when the wait began.
    seen: u64,
    /// The header-read timeout hyper arms its waits with.
    head: Duration,
    head_begun: bool,
}

impl CoarseSleep {
    /// A new wait to `deadline` (hyper's: the header-read timeout from now). A connection's
    /// own waits until the connection's idle time is up, and until `deadline`'s length from
    /// the first bytes of a head.
    fn reset(&mut self, deadline: Instant) {
        let deadline = match &mut self.idle {
            Some(i) => {
                i.seen = i.reads.count();
                i.head_begun = false;
                // hyper's deadline is the header-read timeout from now: the wait began then,
                // without another reading of the clock.
                deadline
                    .checked_sub(i.head)
                    .map_or(deadline, |start| after(start, i.idle))
            }
            None => deadline,
        };
        self.set(deadline);
    }

    fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(i) = self.slot
            && let Some(Some(e)) = self.sweep.slots().entries.get_mut(i)
        {
            e.deadline = deadline;
        }
    }

    fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut slots = self.sweep.slots();
            if let Some(e) = slots.entries.get_mut(i) {
                *e = None;
                slots.free.push(i);
            }
        }
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let now = now();
        // Polled as a head's bytes come in (hyper polls it whenever a read left the head
        // unfinished): the head has the header-read timeout from then.
        if let Some(i) = &mut this.idle
            && !i.head_begun
            && i.reads.count() != i.seen
        {
            i.head_begun = true;
            let deadline = after(now, i.head);
            this.set(deadline);
        }
        if now >= this.deadline {
            this.release();
            return Poll::Ready(());
        }
        let mut slots = this.sweep.slots();
        match this.slot.and_then(|i| slots.entries.get_mut(i)) {
            Some(Some(e)) => {
                if !e.waker.will_wake(cx.waker()) {
                    e.waker = cx.waker().clone();
                }
            }
            _ => {
                let entry = Entry {
                    deadline: this.deadline,
                    waker: cx.waker().clone(),
                };
                let i = match slots.free.pop() {
                    Some(i) => {
                        slots.entries[i] = Some(entry);
                        i
                    }
                    None => {
                        slots.entries.push(Some(entry));
                        slots.entries.len() - 1
                    }
                };
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    fn waiting(sweep: &Sweep) -> usize {
        sweep.slots().entries.iter().flatten().count()
    }

    #[tokio::test(start_paused = true)]
    async fn fires_on_the_first_sweep_past_its_deadline_and_leaves_no_slot() {
        let sweep = Arc::new(Sweep::default());
        let timer = CoarseTimer::new(sweep.clone());
        let sleeping = tokio::spawn(timer.sleep(Duration::from_secs(2)));
        tokio::task::yield_now().await;
        assert_eq!(waiting(&sweep), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        sweep.wake_due();
        tokio::task::yield_now().await;
        assert!(!sleeping.is_finished());
        tokio::time::advance(Duration::from_millis(1500)).await;
        sweep.wake_due();
        sleeping.await.unwrap();
        assert_eq!(waiting(&sweep), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_moves_the_deadline_and_a_dropped_sleep_frees_its_slot() {
        let sweep = Arc::new(Sweep::default());
        let timer = CoarseTimer::new(sweep.clone());
        let mut sleep = timer.sleep(Duration::from_secs(1));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        timer.reset(&mut sleep, now() + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        // Another sleep takes the slot this one frees.
        drop(sleep);
        assert_eq!(waiting(&sweep), 0);
        let mut other = timer.sleep(Duration::from_secs(1));
        assert!(other.as_mut().poll(&mut cx).is_pending());
        assert_eq!(sweep.slots().entries.len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(other.as_mut().poll(&mut cx).is_ready());
        assert_eq!(waiting(&sweep), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connections_wait_is_idle_until_its_first_bytes_then_a_head_has_its_timeout() {
        let sweep = Arc::new(Sweep::default());
        let reads = Arc::new(Reads::default());
        let timer = CoarseTimer::new(sweep.clone()).for_connection(
            reads.clone(),
            Duration::from_secs(1),
            Duration::from_secs(4),
        );
        let mut sleep = timer.sleep(Duration::from_secs(1));
        let mut poll = || {
            let waker = futures_util::task::noop_waker();
            sleep
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
        };
        assert!(!poll());
        // Idle past the header-read timeout: still waiting.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!poll());
        // A head's first bytes: a second from now.
        reads.one();
        assert!(!poll());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(!poll());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(poll());

        // Re-armed for the next head: idle again, up to the idle timeout.
        let mut sleep = timer.sleep(Duration::from_secs(1));
        timer.reset(&mut sleep, now() + Duration::from_secs(1));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(3_900)).await;
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(waiting(&sweep), 0);
    }
}
