//! ④ The calendar windows limits count in, all UTC: the minute, the day and the month, and how
//! long until each starts again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Minutes since the epoch.
    pub(crate) minute: u64,
    /// `2026-11-27`.
    pub(crate) day: String,
    /// `2026-11`.
    pub(crate) month: String,
    pub(crate) to_next_minute: Duration,
    pub(crate) to_next_day: Duration,
    pub(crate) to_next_month: Duration,
    /// Milliseconds since the epoch.
    pub(crate) now_ms: u64,
}

use crate::base::{civil, days_in_month, digits};

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
        let (y, m, d) = civil(days);
        let into_day = ms - days * 86_400_000;
        let to_next_day = 86_400_000 - into_day;
        let to_next_month = (days_in_month(y, m) - d) * 86_400_000 + to_next_day;
        // Built digit by digit: `format!` was most of a request's limit bookkeeping.
        let day = if y > 9999 {
            format!("{y}-{m:02}-{d:02}")
        } else {
            let mut date = *b"0000-00-00";
            digits(&mut date[0..4], y);
            digits(&mut date[5..7], m);
            digits(&mut date[8..10], d);
            String::from_utf8_lossy(&date).into_owned()
        };
        Windows {
            minute: secs / 60,
            month: day[..day.len() - 3].to_owned(),
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
        assert_eq!(
            (w.day.as_str(), w.month.as_str()),
            ("2024-02-29", "2024-02")
        );
        assert_eq!(w.to_next_month, Duration::from_millis(86_400_000));
        let w = Windows::at_ms(1_798_761_599_000); // 2026-12-31T23:59:59Z
        assert_eq!(w.day, "2026-12-31");
        assert_eq!(w.to_next_month, Duration::from_secs(1));
        assert_eq!(Windows::at_ms(1_798_761_600_000).day, "2027-01-01");
        assert_eq!(day_start("2027-01-01"), Some(1_798_761_600));
        assert_eq!(day_start("2024-02-29"), Some(1_709_164_800));
        assert_eq!(day_start("2023-02-29"), None);
        assert_eq!(day_start("tomorrow"), None);
    }
}
