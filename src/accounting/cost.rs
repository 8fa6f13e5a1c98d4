//! What an answer cost, from its usage and the deployment's price: cached input at the cache
//! price, cache writes at the write price, reasoning tokens as output.

use crate::api::Usage;
use crate::catalog::Price;

/// USD for `usage` at `price` (per million tokens).
pub fn of(usage: &Usage, price: &Price) -> f64 {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    let written = usage.cache_write_tokens.min(usage.prompt_tokens - cached);
    let fresh = usage.prompt_tokens - cached - written;
    let input = fresh as f64 * price.input
        + cached as f64 * price.cache_read.unwrap_or(price.input)
        + written as f64 * price.cache_write.unwrap_or(price.input);
    let output = usage.completion_tokens as f64 * price.output;
    (input + output) / 1e6
}

/// A cost as a header value: dollars with 8 decimals, no exponent.
pub fn header(cost: f64) -> String {
    format!("{cost:.8}")
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
}
