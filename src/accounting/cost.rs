//! What an answer cost, from its usage and the deployment's price: cached input at the cache
//! price, cache writes at the write price, reasoning tokens as output.

use crate::catalog::Price;
use crate::exchange::Usage;

/// USD for `usage` at `price` (per million tokens).
pub(crate) fn of(usage: &Usage, price: &Price) -> f64 {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
    let fresh = usage.prompt_tokens - cached - written;
    let input = fresh as f64 * price.input
        + cached as f64 * price.cache_read.unwrap_or(price.input)
        + written as f64 * price.cache_write.unwrap_or(price.input);
    let output = usage.completion_tokens as f64 * price.output;
    (input + output) / 1e6
}

/// A cost as a header value: dollars with 8 decimals, no exponent (what `{:.8}` writes).
pub(crate) fn header(cost: f64) -> http::HeaderValue {
    let mut buf = [0; FIXED8];
    let value = match fixed8(cost, &mut buf) {
        Some(text) => http::HeaderValue::from_str(text),
        None => http::HeaderValue::from_str(&format!("{cost:.8}")),
    };
    value.unwrap_or(http::HeaderValue::from_static("0"))
}

/// The room [`fixed8`] writes in.
pub(crate) const FIXED8: usize = 13;

/// `cost` as `{:.8}` writes it, written in `buf` without the formatting machinery (the request's
/// header and its log line both write one); `None` when `format!` must (see within).
pub(crate) fn fixed8(cost: f64, buf: &mut [u8; FIXED8]) -> Option<&str> {
    // Written from whole hundred-millionths: `format!` with a precision cost as much as the
    // rest of writing the answer's headers. Below 10,000 dollars the product is within 2^-13 of
    // the exact one, so rounding it agrees with `{:.8}` except near a tie, which (with anything
    // larger, negative or not finite) is left to `format!`.
    let scaled = cost * 1e8;
    let near_tie = (scaled - scaled.trunc() - 0.5).abs() < 1e-3;
    let n = scaled.round();
    if !(0.0..1e12).contains(&n) || near_tie || cost.is_sign_negative() {
        return None;
    }
    let n = n as u64;
    *buf = *b"0000.00000000";
    crate::base::digits(&mut buf[..4], n / 100_000_000);
    crate::base::digits(&mut buf[5..], n % 100_000_000);
    // `{:.8}` pads nothing on the left: the buffer's leading zeros go, the units digit stays.
    let start = buf[..3].iter().take_while(|&&b| b == b'0').count();
    std::str::from_utf8(&buf[start..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_and_reasoning_tokens_are_priced_right() {
        let price = Price {
            input: 3.0,
            output: 15.0,
            cache_read: Some(0.3),
            cache_write: Some(3.75),
            ..Price::default()
        };
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 100_000,
            cached_tokens: 400_000,
            cache_write_tokens: 100_000,
            reasoning_tokens: 50_000,
            estimated: false,
        };
        // 500k fresh × 3 + 400k cached × 0.3 + 100k written × 3.75 + 100k out × 15 (reasoning
        // is part of the output count), per million.
        let want = (500_000.0 * 3.0 + 400_000.0 * 0.3 + 100_000.0 * 3.75 + 100_000.0 * 15.0) / 1e6;
        assert!((of(&usage, &price) - want).abs() < 1e-9);
        assert_eq!(header(0.0), "0.00000000");
        // Without cache prices, cached tokens cost the input price.
        let plain = Price {
            input: 1.0,
            output: 2.0,
            ..Price::default()
        };
        assert!((of(&usage, &plain) - (1_000_000.0 + 200_000.0) / 1e6).abs() < 1e-9);
    }

    #[test]
    fn cost_headers_read_as_format_writes_them() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut samples = vec![
            0.0,
            1e-8,
            5e-9,
            0.5,
            0.000_097_5,
            1.0,
            9_999.999_999_99,
            9_999.999_999_996,
            12_345.6,
            -0.0,
            1e-9,
            -1.5,
            f64::NAN,
            f64::INFINITY,
        ];
        for _ in 0..20_000 {
            // xorshift: costs over many magnitudes, from token counts times prices.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let tokens = (x % 2_000_000) as f64;
            let price = ((x >> 21) % 100_000) as f64 / 1000.0;
            samples.push(tokens * price / 1e6);
        }
        for c in samples {
            assert_eq!(header(c).to_str().unwrap(), format!("{c:.8}"), "{c:e}");
        }
    }
}
