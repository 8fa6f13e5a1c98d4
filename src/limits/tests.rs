//! Counters and windows of the in-memory store, stepped through time explicitly.

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// 2026-11-27T12:00:00Z, plus `secs`.
fn at(secs: u64) -> Windows {
    Windows::at_ms(1_795_780_800_000 + secs * 1000)
}

fn scope(kind: ScopeKind, name: &str, limits: LimitSet) -> Scope {
    Scope {
        kind,
        name: Arc::from(name),
        limits,
    }
}

fn charge(tokens: u64, usd: f64) -> Charge {
    Charge {
        tokens,
        reserve_micros: micros(usd),
        lifetime: Duration::from_secs(60),
    }
}

fn entry(tenant: &str, model: &str, cost: f64, input: u64, output: u64) -> UsageEntry {
    UsageEntry {
        tenant: Arc::from(tenant),
        model: Arc::from(model),
        openness: "open-weight",
        input_tokens: input,
        output_tokens: output,
        cost_micros: micros(cost),
    }
}

#[test]
fn requests_per_minute_reset_with_the_calendar_minute() {
    let m = memory::MemoryStore::default();
    let s = [scope(
        ScopeKind::Key,
        "k",
        LimitSet {
            requests_per_minute: Some(3),
            ..LimitSet::default()
        },
    )];
    for i in 0..3 {
        assert!(
            m.admit(&s, charge(0, 0.0), &at(10), &format!("t{i}"))
                .is_ok()
        );
    }
    let r = m.admit(&s, charge(0, 0.0), &at(10), "t3").unwrap_err();
    assert_eq!(r.limit, Limit::RequestsPerMinute);
    assert_eq!(r.cap, 3);
    assert_eq!(r.retry_after, Duration::from_secs(50));
    // Still refused at the end of the minute, admitted in the next.
    assert!(m.admit(&s, charge(0, 0.0), &at(59), "t4").is_err());
    assert!(m.admit(&s, charge(0, 0.0), &at(60), "t5").is_ok());
}

#[test]
fn tokens_per_minute_count_the_prompt_and_max_tokens_then_the_actual_output() {
    let m = memory::MemoryStore::default();
    let s = vec![scope(
        ScopeKind::Tenant,
        "t",
        LimitSet {
            tokens_per_minute: Some(1000),
            ..LimitSet::default()
        },
    )];
    m.admit(&s, charge(600, 0.0), &at(0), "a").unwrap();
    assert_eq!(
        m.admit(&s, charge(500, 0.0), &at(1), "b")
            .unwrap_err()
            .limit,
        Limit::TokensPerMinute
    );
    // The first answer used 100 tokens more than it was charged: they count too.
    m.finish(
        Some(&("a".into(), s.clone(), charge(600, 0.0))),
        &entry("t", "m", 0.0, 200, 500),
        &at(2),
    );
    m.admit(&s, charge(250, 0.0), &at(3), "c").unwrap();
    assert!(m.admit(&s, charge(100, 0.0), &at(3), "d").is_err());
}

#[test]
fn spend_is_reserved_then_settled_and_resets_by_day_but_not_by_month() {
    let m = memory::MemoryStore::default();
    let s = vec![scope(
        ScopeKind::Tenant,
        "t",
        LimitSet {
            usd_micros_per_day: Some(micros(1.0)),
            usd_micros_per_month: Some(micros(1.5)),
            ..LimitSet::default()
        },
    )];
    // Two concurrent requests that may each cost $0.40: both reserved; a third is refused
    // while they are in flight.
    let levels = m.admit(&s, charge(0, 0.40), &at(0), "a").unwrap();
    assert_eq!(levels[0].1, micros(0.40));
    m.admit(&s, charge(0, 0.40), &at(0), "b").unwrap();
    let r = m.admit(&s, charge(0, 0.40), &at(0), "c").unwrap_err();
    assert_eq!(r.limit, Limit::UsdPerDay);
    // Reservations in flight fill it, not spend: they clear in seconds.
    assert_eq!(r.retry_after, Duration::from_secs(1));
    // They cost $0.05 each in the end: their reservations are released.
    for id in ["a", "b"] {
        m.finish(
            Some(&(id.into(), s.clone(), charge(0, 0.40))),
            &entry("t", "m", 0.05, 10, 10),
            &at(1),
        );
    }
    let levels = m.admit(&s, charge(0, 0.80), &at(2), "d").unwrap();
    assert_eq!(levels[0].1, micros(0.90));
    m.finish(
        Some(&("d".into(), s.clone(), charge(0, 0.80))),
        &entry("t", "m", 0.80, 10, 10),
        &at(3),
    );
    // $0.90 spent today: $0.20 more does not fit the day.
    assert_eq!(
        m.admit(&s, charge(0, 0.20), &at(4), "e").unwrap_err().limit,
        Limit::UsdPerDay
    );
    // Tomorrow the day is fresh but the month is not: $0.90 of $1.50 spent.
    let tomorrow = at(12 * 3600);
    assert_eq!(tomorrow.day, "2026-11-28");
    let r = m.admit(&s, charge(0, 0.70), &tomorrow, "f").unwrap_err();
    assert_eq!(r.limit, Limit::UsdPerMonth);
    assert!(m.admit(&s, charge(0, 0.50), &tomorrow, "g").is_ok());
}

#[test]
fn a_refused_request_counts_in_no_scope() {
    let m = memory::MemoryStore::default();
    let key = scope(
        ScopeKind::Key,
        "k",
        LimitSet {
            requests_per_minute: Some(100),
            ..LimitSet::default()
        },
    );
    let tenant = scope(
        ScopeKind::Tenant,
        "t",
        LimitSet {
            requests_per_minute: Some(1),
            ..LimitSet::default()
        },
    );
    let both = [key.clone(), tenant];
    m.admit(&both, charge(0, 0.0), &at(0), "a").unwrap();
    for i in 0..10 {
        let r = m
            .admit(&both, charge(0, 0.0), &at(1), &format!("x{i}"))
            .unwrap_err();
        assert_eq!(r.kind, ScopeKind::Tenant);
    }
    // The key alone has used 1 of its 100, not 11.
    let only_key = [scope(
        ScopeKind::Key,
        "k",
        LimitSet {
            requests_per_minute: Some(2),
            ..LimitSet::default()
        },
    )];
    assert!(m.admit(&only_key, charge(0, 0.0), &at(2), "b").is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_ticket_dropped_unsettled_releases_its_reservation() {
    let limiter = Arc::new(Limiter::memory());
    let s = vec![scope(
        ScopeKind::Key,
        "k",
        LimitSet {
            usd_micros_per_day: Some(micros(1.0)),
            ..LimitSet::default()
        },
    )];
    let (t, _) = limiter.admit(&s, charge(0, 0.9)).await.unwrap().unwrap();
    assert!(matches!(
        limiter.admit(&s, charge(0, 0.9)).await,
        Err(LimitError::Refused(_))
    ));
    // The request failed (or its client left): nothing was spent.
    drop(t);
    let (t, _) = limiter.admit(&s, charge(0, 0.9)).await.unwrap().unwrap();
    // Settled once; a second settlement changes nothing.
    limiter.finish(Some(&t), entry("t", "m", 0.5, 1, 1));
    limiter.finish(Some(&t), entry("t", "m", 0.5, 1, 1));
    drop(t);
    assert!(limiter.admit(&s, charge(0, 0.5)).await.is_ok());
    assert!(matches!(
        limiter.admit(&s, charge(0, 0.6)).await,
        Err(LimitError::Refused(_))
    ));
    // No scopes: no store, no ticket.
    assert!(limiter.admit(&[], charge(0, 1e9)).await.unwrap().is_none());
}

#[tokio::test]
async fn usage_is_reported_by_tenant_model_and_openness() {
    let limiter = Arc::new(Limiter::memory());
    limiter.finish(None, entry("research", "olmo", 0.0, 100, 20));
    limiter.finish(None, entry("research", "olmo", 0.0, 50, 10));
    limiter.finish(None, entry("product", "gpt-4o", 0.25, 10, 5));
    let all = limiter.usage(None).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&all.to_json()).unwrap();
    assert_eq!(v["tenants"].as_array().unwrap().len(), 2);
    let research = limiter.usage(Some("research")).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&research.to_json()).unwrap();
    let day = &v["tenants"][0]["day"];
    assert_eq!(day["requests"], 2);
    assert_eq!(day["input_tokens"], 150);
    assert_eq!(day["by_openness"]["open-weight"]["output_tokens"], 30);
    assert_eq!(day["by_model"][0]["model"], "olmo");
    assert_eq!(v["tenants"][0]["month"]["requests"], 2);
    let product = limiter.usage(Some("product")).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&product.to_json()).unwrap();
    assert_eq!(v["tenants"][0]["day"]["usd"], 0.25);
}

#[test]
fn refusals_say_which_limit_and_carry_openai_headers() {
    let e = LimitError::Refused(Refused {
        kind: ScopeKind::Tenant,
        name: Arc::from("research"),
        limit: Limit::UsdPerDay,
        cap: micros(20.0),
        retry_after: Duration::from_secs(3600),
    });
    assert_eq!(e.status(), http::StatusCode::TOO_MANY_REQUESTS);
    let b = e.body();
    assert_eq!(b.code.as_deref(), Some("budget_exceeded"));
    assert!(b.message.contains("tenant 'research'") && b.message.contains("$20.00 per day"));
    let mut h = http::HeaderMap::new();
    e.headers(&mut h);
    assert_eq!(h["retry-after"], "3600");
    assert_eq!(h["x-ratelimit-reset-usd-micros"], "3600s");
}

#[test]
fn a_refusal_by_reservations_in_flight_says_a_second_and_lapsed_ones_free_the_budget() {
    let store = memory::MemoryStore::default();
    let w = Windows::now();
    let s = scope(
        ScopeKind::Tenant,
        "t",
        LimitSet {
            usd_micros_per_day: Some(micros(1.0)),
            ..LimitSet::default()
        },
    );
    let scopes = std::slice::from_ref(&s);
    // Held by a reservation in flight: come back in a second, not at midnight.
    store.admit(scopes, charge(1, 0.8), &w, "a").unwrap();
    let r = store.admit(scopes, charge(1, 0.5), &w, "b").unwrap_err();
    assert_eq!(r.retry_after, Duration::from_secs(1));
    // Spent for real: the next day.
    store.release("a", scopes, charge(1, 0.8));
    store.finish(
        Some(&("c".to_owned(), scopes.to_vec(), charge(1, 0.0))),
        &entry("t", "m", 0.8, 1, 1),
        &w,
    );
    let r = store.admit(scopes, charge(1, 0.5), &w, "d").unwrap_err();
    assert_eq!(r.retry_after, w.to_next_day);
    // A reservation past its lifetime (nobody settled it) no longer holds the budget.
    let store = memory::MemoryStore::default();
    let short = Charge {
        lifetime: Duration::from_millis(50),
        ..charge(1, 0.9)
    };
    store.admit(scopes, short, &w, "ghost").unwrap();
    assert!(store.admit(scopes, charge(1, 0.5), &w, "e").is_err());
    std::thread::sleep(Duration::from_millis(80));
    store.admit(scopes, charge(1, 0.5), &w, "f").unwrap();
}
