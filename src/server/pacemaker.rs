//! A timer that is always armed, so that arming the others costs no wake-up.
//!
//! Tokio's time driver wakes its I/O driver (a write to an eventfd, then one more `epoll_wait`
//! and turn of the scheduler) whenever a timer is registered with a deadline earlier than the
//! one the driver last parked for, even while a worker is running and will see the timer anyway
//! (tokio-rs/tokio#5207). On a keep-alive connection hyper arms the header-read timer after
//! every response; between requests the only other timers are a request's own (first byte,
//! total), which are later. So every request paid two system calls and an idle turn for
//! nothing. With this timer armed the driver never parks for longer than [`period`], every
//! timer a request arms is later than that, and none of them wakes the driver.
//!
//! Each tick also wakes the HTTP/1 header-read sleeps whose deadline has passed
//! ([`super::coarse_timer`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::coarse_timer::Sweep;

/// The shortest period: below it the ticks would cost more than the wake-ups they save.
const SHORTEST: Duration = Duration::from_millis(50);
/// The longest: an idle gateway wakes once per period and no more often.
const LONGEST: Duration = Duration::from_secs(1);

/// How often the pacemaker ticks: a tenth of the header-read timeout (how late that timeout
/// may fire), at most a second.
pub(super) fn period(header_read_timeout: Duration) -> Duration {
    (header_read_timeout / 10).clamp(SHORTEST, LONGEST)
}

/// Runs for as long as the runtime does.
pub(super) async fn run(period: Duration, sweep: Arc<Sweep>) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        sweep.wake_due();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_at_a_tenth_of_the_header_read_timeout() {
        let s = Duration::from_secs;
        assert_eq!(period(s(10)), s(1));
        assert_eq!(period(s(4)), Duration::from_millis(400));
        assert_eq!(period(s(3600)), LONGEST);
        assert_eq!(period(Duration::from_millis(20)), SHORTEST);
        for t in [1, 2, 7, 10, 30, 600] {
            assert!(period(s(t)) * 10 <= s(t));
        }
    }
}
