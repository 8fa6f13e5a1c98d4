//! hyper's timer for HTTP/1 connections. Its one use there is the header-read timeout: armed
//! when a connection starts waiting for a request's head, dropped when the head is in, so once
//! per request. Through tokio's timer that was a box, a registration and a removal under the
//! time driver's lock (~800 instructions a request) for a limit almost never reached. Here a
//! sleep is a slot in a table that the pacemaker sweeps on each of its ticks: it fires on the
//! first tick past its deadline, up to one tick late (a guard against slow clients, not a
//! clock; the tick is a tenth of the timeout, at most a second).

use std::future::Future;
use std::pin::Pin;
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

/// The timer handed to hyper's HTTP/1 connections.
#[derive(Clone)]
pub(super) struct CoarseTimer(pub(super) Arc<Sweep>);

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // A duration too long to add is no limit within the process' life.
        let far = Duration::from_secs(86_400 * 365 * 30);
        self.sleep_until(now() + duration.min(far))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep {
            sweep: self.0.clone(),
            deadline,
            slot: None,
        })
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
}

impl CoarseSleep {
    fn reset(&mut self, deadline: Instant) {
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
        if now() >= this.deadline {
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
        let timer = CoarseTimer(sweep.clone());
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
        let timer = CoarseTimer(sweep.clone());
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
}
