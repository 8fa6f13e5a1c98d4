//! A band's cheapest groups found by walking its two price orders are the ones pricing every
//! group finds, and few groups are priced to find them.

use proptest::prelude::*;

use super::*;

/// A band of groups at `prices`, each group's key its position, of the kinds of model `kinds`
/// gives (by position, cycled; all of kind 0 if empty).
fn band_of(prices: &[[f64; 2]], kinds: &[usize]) -> Band {
    let groups = prices.iter().enumerate().map(|(at, &price)| Group {
        key: at as u128,
        price,
        kind: kinds.get(at % kinds.len().max(1)).copied().unwrap_or(0),
        len: 1,
    });
    let mut b = Band {
        above: 0,
        groups: groups.collect(),
        by_input: Box::default(),
        by_output: Box::default(),
        kinds: Box::default(),
    };
    b.sort();
    b
}

fn band(prices: &[[f64; 2]]) -> Band {
    band_of(prices, &[])
}

/// Every group left, no price cap.
fn all(tokens: (u64, u64)) -> Priced<'static> {
    (&[Left::All], f64::INFINITY, tokens)
}

const SHIFT: u32 = GROUP_BITS;

/// The positions of the groups left whose cost is at most the `N`-th least of those left, by
/// pricing each.
fn by_pricing_all<const N: usize>(b: &Band, priced: Priced) -> Vec<usize> {
    let left: Vec<&Group> = b.groups.iter().filter(|g| g.left(priced)).collect();
    let mut costs: Vec<u64> = left.iter().map(|g| cost_bits(g.price, priced.2)).collect();
    costs.sort_unstable();
    let bar = costs.get(N - 1).copied().unwrap_or(u64::MAX);
    left.iter()
        .filter(|g| cost_bits(g.price, priced.2) <= bar)
        .map(|g| g.key as usize)
        .collect()
}

fn price() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        (0..20u32).prop_map(|c| f64::from(c) * 0.05),
        0.0..100.0f64,
    ]
}

fn left() -> impl Strategy<Value = Left> {
    prop_oneof![
        Just(Left::All),
        Just(Left::None),
        (0..10_000u64, 0..10_000u64).prop_map(|(p, o)| Left::UnderCap(p, o)),
    ]
}

/// The walk's keys against pricing every group, for the `N` cheapest.
fn agrees<const N: usize>(b: &Band, priced: Priced) -> Result<(), TestCaseError> {
    let mut keys = Vec::new();
    b.cheapest::<N>(priced, SHIFT, &mut keys);
    let at = |k: &u128| (*k & ((1 << SHIFT) - 1)) as usize;
    for k in &keys {
        let g = &b.groups[at(k)];
        prop_assert!(g.left(priced), "group {} is not left", at(k));
        let cost = cost_bits(g.price, priced.2);
        prop_assert_eq!((*k >> SHIFT) as u64, cost, "group {} keyed wrong", at(k));
    }
    let mut got: Vec<usize> = keys.iter().map(at).collect();
    got.sort_unstable();
    prop_assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "pushed twice: {:?}",
        got
    );
    let want = by_pricing_all::<N>(b, priced);
    for w in &want {
        prop_assert!(
            got.contains(w),
            "{} missing: got {:?}, want {:?}",
            w,
            got,
            want
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_walk_finds_every_group_pricing_all_would(
        prices in proptest::collection::vec([price(), price()], 1..80),
        kinds in proptest::collection::vec(0..3usize, 0..5),
        lefts in proptest::array::uniform3(left()),
        cap in prop_oneof![Just(f64::INFINITY), 0.0..2.0f64],
        prompt in prop_oneof![Just(0u64), 1..100_000u64],
        out in prop_oneof![Just(0u64), 1..100_000u64],
    ) {
        let b = band(&prices);
        agrees::<1>(&b, all((prompt, out)))?;
        agrees::<2>(&b, all((prompt, out)))?;
        agrees::<8>(&b, all((prompt, out)))?;
        // Some kinds of model refused, some cut by a price cap.
        let b = band_of(&prices, &kinds);
        agrees::<2>(&b, (&lefts, cap, (prompt, out)))?;
        agrees::<8>(&b, (&lefts, cap, (prompt, out)))?;
    }
}

/// The benchmark's thousand deployments priced apart (a grid of 97 input and 89 output prices),
/// asked with a short prompt and the assumed answer, or a long prompt and a short answer.
#[test]
fn a_thousand_groups_priced_apart_are_found_by_pricing_few() {
    let prices: Vec<[f64; 2]> = (0..1000)
        .map(|i| {
            [
                0.05 + f64::from(i % 97) * 0.01,
                0.10 + f64::from(i % 89) * 0.02,
            ]
        })
        .collect();
    let b = band(&prices);
    for tokens in [(12, 256), (40_000, 16), (1000, 1000), (0, 256), (256, 0)] {
        let mut keys = Vec::new();
        let priced = b.cheapest::<8>(all(tokens), SHIFT, &mut keys);
        // Measured: 8 to 24, and 120 with prompt and answer alike.
        assert!(priced <= 160, "{tokens:?}: priced {priced} of 1,000");
        let want = by_pricing_all::<8>(&b, all(tokens));
        assert!(
            want.len() <= keys.len(),
            "{tokens:?}: {} of {}",
            keys.len(),
            want.len()
        );
    }
}

/// A thousand prices scattered at random over a square: more are priced, still not most.
#[test]
fn a_thousand_groups_at_random_prices_are_found_by_pricing_some() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64 / 1000.0
    };
    let prices: Vec<[f64; 2]> = (0..1000).map(|_| [next(), next()]).collect();
    let b = band(&prices);
    for tokens in [(12, 256), (40_000, 16), (1000, 1000), (500, 2000)] {
        let mut keys = Vec::new();
        let priced = b.cheapest::<8>(all(tokens), SHIFT, &mut keys);
        // Measured: 8 to 112.
        assert!(priced <= 300, "{tokens:?}: priced {priced} of 1,000");
        assert!(by_pricing_all::<8>(&b, all(tokens)).len() <= keys.len());
    }
}
