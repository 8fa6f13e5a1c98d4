//! ④ The calendar windows limits count in, all UTC: the minute, the day and the month, and how
//! long until each starts again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Minutes since the epoch.
    pub(crate) minute: u64,
    /// `2026-11-27`.
    pub(crate) day: Stamp,
    /// `2026-11`.
    pub(crate) month: Stamp,
    pub(crate) to_next_minute: Duration,
    pub(crate) to_next_day: Duration,
    pub(crate) to_next_month: Duration,
    /// Milliseconds since the epoch.
    pub(crate) now_ms: u64,
}

use crate::base::{civil, days_in_month, digits};

/// A day (`2026-11-27`) or a month (`2026-11`), kept inline: built digit by digit, never on
/// the heap, since every request's limit bookkeeping makes two (`format!` and two strings
/// were most of its cost).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Stamp {
    /// Room for any year a `u64` of milliseconds reaches (nine digits) and `-MM-DD`.
    buf: [u8; 16],
    len: u8,
}

impl Stamp {
    fn date(y: u64, m: u64, d: u64) -> Stamp {
        let mut buf = [0u8; 16];
        let year = y.checked_ilog10().unwrap_or(0) as usize + 1;
        let year = year.max(4);
        digits(&mut buf[..year], y);
        buf[year] = b'-';
        digits(&mut buf[year + 1..year + 3], m);
        buf[year + 3] = b'-';
        digits(&mut buf[year + 4..year + 6], d);
        Stamp {
            buf,
            len: (year + 6) as u8,
        }
    }

    /// The month of a day.
    fn month(self) -> Stamp {
        let mut month = self;
        let len = usize::from(self.len) - 3;
        month.buf[len..].fill(0);
        month.len = len as u8;
        month
    }
}

impl std::ops::Deref for Stamp {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII digits and dashes are ever written.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl PartialEq<&str> for Stamp {
    fn eq(&self, other: &&str) -> bool {
        **self == **other
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

thread_local! {
    /// The last day worked out on this thread: its stamp and the days left in its month. The
    /// calendar's arithmetic and digits change once a day, and every answered request asks.
    static DAY: std::cell::Cell<Option<(u64, Stamp, u64)>> = const { std::cell::Cell::new(None) };
}

impl Windows {
    pub(crate) fn now() -> Windows {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Windows::at_ms(ms)
    }

    pub(crate) fn at_ms(ms: u64) -> Windows {
        let secs = ms / 1000;
        let days = secs / 86_400;
        let (day, days_left) = DAY.with(|last| match last.get() {
            Some((at, day, left)) if at == days => (day, left),
            _ => {
                let (y, m, d) = civil(days);
                let worked = (Stamp::date(y, m, d), days_in_month(y, m) - d);
                last.set(Some((days, worked.0, worked.1)));
                worked
            }
        });
        let into_day = ms - days * 86_400_000;
        let to_next_day = 86_400_000 - into_day;
        let to_next_month = days_left * 86_400_000 + to_next_day;
        Windows {
            minute: secs / 60,
            month: day.month(),
            day,
            to_next_minute: Duration::from_millis(60_000 - ms % 60_000),
            to_next_day: Duration::from_millis(to_next_day),
            to_next_month: Duration::from_millis(to_next_month),
            now_ms: ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::day_start;

    #[test]
    fn calendar_windows_in_utc() {
        // 2026-11-27T23:59:30.500Z
        let w = Windows::at_ms(1_795_823_970_500);
        assert_eq!(w.day, "2026-11-27");
        assert_eq!(w.month, "2026-11");
        assert_eq!(w.to_next_minute, Duration::from_millis(29_500));
        assert_eq!(w.to_next_day, Duration::from_millis(29_500));
        assert_eq!(
            w.to_next_month,
            Duration::from_millis(3 * 86_400_000 + 29_500)
        );
        // A leap day and the end of a year.
        let w = Windows::at_ms(1_709_164_800_000); // 2024-02-29T00:00:00Z
        assert_eq!((&*w.day, &*w.month), ("2024-02-29", "2024-02"));
        assert_eq!(w.to_next_month, Duration::from_millis(86_400_000));
        let w = Windows::at_ms(1_798_761_599_000); // 2026-12-31T23:59:59Z
        assert_eq!(w.day, "2026-12-31");
        assert_eq!(w.to_next_month, Duration::from_secs(1));
        assert_eq!(Windows::at_ms(1_798_761_600_000).day, "2027-01-01");
        assert_eq!(day_start("2027-01-01"), Some(1_798_761_600));
        assert_eq!(day_start("2024-02-29"), Some(1_709_164_800));
        assert_eq!(day_start("2023-02-29"), None);
        assert_eq!(day_start("tomorrow"), None);
        // Years past 9999 (a clock gone wrong) still make a day and its month.
        let far = Windows::at_ms(u64::MAX);
        assert!(far.day.starts_with(&*far.month) && far.day.len() == far.month.len() + 3);
        assert!(far.day.len() > 10, "{far:?}");
    }

    #[test]
    fn the_day_kept_from_the_last_call_is_used_for_that_day_only() {
        let noon = 1_795_780_800_000; // 2026-11-27T12:00:00Z
        let first = Windows::at_ms(noon);
        let later = Windows::at_ms(noon + 1_000);
        assert_eq!((later.day, later.month), (first.day, first.month));
        assert_eq!(
            first.to_next_month - later.to_next_month,
            Duration::from_secs(1)
        );
        // Back and forth between days and months: each answer is its own day's.
        for (ms, day, to_month) in [
            (
                noon + 4 * 86_400_000,
                "2026-12-01",
                30 * 86_400_000 + 43_200_000,
            ),
            (noon, "2026-11-27", 3 * 86_400_000 + 43_200_000),
            (
                noon + 4 * 86_400_000,
                "2026-12-01",
                30 * 86_400_000 + 43_200_000,
            ),
        ] {
            let w = Windows::at_ms(ms);
            assert_eq!(w.day, day);
            assert_eq!(w.to_next_month, Duration::from_millis(to_month));
        }
    }
}
