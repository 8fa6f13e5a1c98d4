use super::*;
use std::time::Duration;

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    for bad in ["", "s", "10", "10 parsecs", "-1s", "1e400s", "10d"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
