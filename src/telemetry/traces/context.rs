//! W3C Trace Context: the `traceparent` header a client sends (continued) and the one sent
//! upstream, and random trace and span ids.

use std::cell::Cell;

/// `traceparent`'s name.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Where a span sits in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    /// The caller sampled it (flag `01`).
    pub(crate) sampled: bool,
}

/// A `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`), or `None` when it is malformed or
/// all-zero, which the specification says to ignore (and start a new trace).
pub(crate) fn parse(value: &[u8]) -> Option<Parent> {
    // Version 00 is exactly 55 bytes; a later version may append fields after a dash.
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = hex::<1>(&value[0..2])?;
    if version == [0xff] || (version == [0] && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex::<16>(&value[3..35])?;
    let span_id = hex::<8>(&value[36..52])?;
    let flags = hex::<1>(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

/// The `traceparent` naming span `span_id` of trace `trace_id`.
pub(crate) fn format(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> http::HeaderValue {
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    push_hex(&mut out, trace_id);
    out.push(b'-');
    push_hex(&mut out, span_id);
    out.extend_from_slice(if sampled { b"-01" } else { b"-00" });
    http::HeaderValue::from_bytes(&out).unwrap_or(http::HeaderValue::from_static("00-0-0-00"))
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// Lower-case hex only, as the specification requires.
fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

thread_local! {
    /// wyrand state, seeded from the OS once per thread.
    static STATE: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            // No OS randomness: the clock and this thread's stack address, so that threads
            // and processes still start apart.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let here = &seed as *const _ as u64;
            seed = (nanos ^ here.rotate_left(32)).to_le_bytes();
        }
        u64::from_le_bytes(seed) | 1
    });
}

/// 64 random bits (wyrand): ids need to be unique and unguessable enough to not collide
/// between gateways, not secret.
fn next() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

pub(crate) fn trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next().to_le_bytes());
        id[8..].copy_from_slice(&next().to_le_bytes());
        if id != [0; 16] {
            return id;
        }
    }
}

pub(crate) fn span_id() -> [u8; 8] {
    loop {
        let id = next().to_le_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// Whether a trace with this id is sampled at `ratio`: decided by the id, so every gateway
/// (and every span of the trace) decides the same, as OpenTelemetry's TraceIdRatioBased does.
pub(crate) fn sampled_at(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    // The id's last 8 bytes as a number below 2^63, against the ratio's share of it.
    let x = u64::from_be_bytes(low) >> 1;
    (x as f64) < ratio * (1u64 << 63) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_traceparent() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse(v).unwrap();
        assert!(p.sampled);
        assert_eq!(format(&p.trace_id, &p.span_id, true).as_bytes(), v);
        let unsampled = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // A later version with more fields is read by its first four.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
    }

    #[test]
    fn refuses_malformed_traceparents() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ids_are_nonzero_and_differ() {
        let a = trace_id();
        let b = trace_id();
        assert_ne!(a, b);
        assert_ne!(span_id(), span_id());
    }

    #[test]
    fn sampling_follows_the_ratio() {
        let n = 20_000;
        let kept = (0..n).filter(|_| sampled_at(&trace_id(), 0.25)).count();
        assert!((4_000..6_000).contains(&kept), "{kept}");
        let id = trace_id();
        assert!(sampled_at(&id, 1.0) && !sampled_at(&id, 0.0));
    }
}
