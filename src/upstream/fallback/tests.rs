//! The attempt loop under paused time: retries, `Retry-After`, budgets, ejection, deadlines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::*;
use crate::adapters::UpstreamFault;
use crate::config::load::load_texts;
use crate::config::{Discovered, Snapshot};
use crate::exchange::{ErrorBody, ErrorType};

/// The scripted attempts' answers. `"stream"` takes the record of its success and never makes
/// it, as a relay whose client never lets it write its first bytes.
impl Answered for &str {
    fn record_later(&mut self, _health: &Arc<Health>) -> bool {
        *self == "stream"
    }
}

/// Echo deployments `a`, `b`, `c` with the given extra settings (YAML flow mappings).
fn fleet(a: &str, b: &str, c: &str) -> Vec<Arc<Deployment>> {
    let yaml = format!(
        "deployments:\n  \
         - {{name: a, kind: echo, model: echo{a}}}\n  \
         - {{name: b, kind: echo, model: echo{b}}}\n  \
         - {{name: c, kind: echo, model: echo{c}}}\n"
    );
    let env: HashMap<String, String> = HashMap::new();
    let loaded = load_texts(&yaml, &[], &[], &env).unwrap_or_else(|p| panic!("{p}\n{yaml}"));
    let snapshot = Snapshot::build(Arc::new(loaded.config), &Discovered::default());
    HEALTH.set(Some(Box::leak(Box::new(Healths::fresh(&snapshot)))));
    snapshot.deployments.to_vec()
}

thread_local! {
    /// The health of the fleet this thread's test made last (each test has its own thread).
    static HEALTH: std::cell::Cell<Option<&'static Healths>> = const { std::cell::Cell::new(None) };
}

fn health() -> &'static Healths {
    HEALTH.get().expect("a fleet is made first")
}

fn status(code: u16, retry_after: Option<&'static str>) -> AttemptError {
    AttemptError::Status {
        fault: UpstreamFault {
            status: StatusCode::from_u16(code).unwrap(),
            body: ErrorBody::new(ErrorType::ApiError, "scripted"),
        },
        retry_after: retry_after.map(HeaderValue::from_static),
    }
}

/// Runs the loop over `fleet`, each deployment answering from its script (then succeeding),
/// and returns the outcome, the attempts in order with the (paused) time each started.
async fn script(
    deployments: &[Arc<Deployment>],
    plan: &Plan<'_>,
    mut scripts: HashMap<&'static str, Vec<AttemptError>>,
) -> (
    Result<Served<&'static str>, UpstreamError>,
    Vec<(String, Duration)>,
) {
    let start = Instant::now();
    let log = Mutex::new(Vec::new());
    let scripts = Mutex::new(std::mem::take(&mut scripts));
    let decision = Decision::allowing(deployments.to_vec());
    let result = run(&decision, plan, |d| {
        log.lock().unwrap().push((d.name.clone(), start.elapsed()));
        let next = scripts
            .lock()
            .unwrap()
            .get_mut(d.name.as_str())
            .and_then(|s| {
                if s.is_empty() {
                    None
                } else {
                    Some(s.remove(0))
                }
            });
        async move {
            match next {
                Some(e) => Err(e),
                None => Ok("answer"),
            }
        }
    })
    .await;
    (result, log.into_inner().unwrap())
}

fn names(log: &[(String, Duration)]) -> Vec<&str> {
    log.iter().map(|(n, _)| n.as_str()).collect()
}

fn plan_secs(s: u64) -> Plan<'static> {
    Plan::until(Instant::now() + Duration::from_secs(s), health())
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_is_retried_once_with_backoff_then_falls_back() {
    let fleet = fleet("", "", "");
    let (served, log) = script(
        &fleet,
        &plan_secs(60),
        HashMap::from([("a", vec![status(503, None), status(503, None)])]),
    )
    .await;
    let served = served.unwrap();
    assert_eq!(names(&log), ["a", "a", "b"]);
    assert_eq!(served.deployment.name, "b");
    assert_eq!(served.failed.len(), 2);
    assert_eq!(served.retries.len(), 1);
    // Full jitter under the first ceiling (100ms).
    assert!(log[1].1 <= Duration::from_millis(100), "{:?}", log[1].1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_can_succeed_on_the_same_deployment() {
    let fleet = fleet("", "", "");
    let (served, log) = script(
        &fleet,
        &plan_secs(60),
        HashMap::from([("a", vec![AttemptError::Connect])]),
    )
    .await;
    assert_eq!(served.unwrap().deployment.name, "a");
    assert_eq!(names(&log), ["a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_moves_on_at_once_and_cools_the_deployment_down() {
    let fleet = fleet("", "", "");
    let (served, log) = script(
        &fleet,
        &plan_secs(60),
        HashMap::from([("a", vec![status(429, Some("3"))])]),
    )
    .await;
    assert_eq!(served.unwrap().deployment.name, "b");
    assert_eq!(names(&log), ["a", "b"]);
    assert_eq!(log[1].1, Duration::ZERO);
    // Cooling down: the next request does not call it before the 3 s are over.
    tokio::time::advance(Duration::from_secs(2)).await;
    let (served, log) = script(&fleet, &plan_secs(60), HashMap::new()).await;
    let served = served.unwrap();
    assert_eq!(names(&log), ["b"]);
    assert!(
        matches!(served.skipped[0].reason, SkipReason::CoolingDown(w) if w == Duration::from_secs(1))
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let (_, log) = script(&fleet, &plan_secs(60), HashMap::new()).await;
    assert_eq!(names(&log), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn the_last_deployment_is_waited_for_when_its_retry_after_is_short() {
    let fleet = fleet("", "", "");
    let only_a = &fleet[..1];
    let (served, log) = script(
        only_a,
        &plan_secs(60),
        HashMap::from([("a", vec![status(429, Some("3"))])]),
    )
    .await;
    assert_eq!(served.unwrap().deployment.name, "a");
    assert_eq!(names(&log), ["a", "a"]);
    assert_eq!(log[1].1, Duration::from_secs(3));

    // Longer than max_retry_after (10s): 429 with the upstream's Retry-After.
    tokio::time::advance(Duration::from_secs(5)).await;
    let (e, log) = script(
        only_a,
        &plan_secs(60),
        HashMap::from([("a", vec![status(429, Some("120"))])]),
    )
    .await;
    let e = e.err().unwrap();
    assert_eq!(names(&log), ["a"]);
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.retry_after().unwrap(), "120");
    // While it cools down, requests are answered 429 without calling it.
    let (e, log) = script(only_a, &plan_secs(60), HashMap::new()).await;
    let e = e.err().unwrap();
    assert!(log.is_empty());
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.retry_after().unwrap(), "120");
}

#[tokio::test(start_paused = true)]
async fn only_the_configured_failures_are_retried() {
    let fleet = fleet(
        ", retries: {attempts: 3, on: [429]}",
        ", retries: {attempts: 0}",
        "",
    );
    let (served, log) = script(
        &fleet,
        &plan_secs(60),
        HashMap::from([
            (
                "a",
                vec![status(429, None), status(429, None), status(500, None)],
            ),
            ("b", vec![status(500, None)]),
        ]),
    )
    .await;
    assert_eq!(served.unwrap().deployment.name, "c");
    assert_eq!(names(&log), ["a", "a", "a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn a_client_error_is_neither_retried_nor_sent_elsewhere() {
    let fleet = fleet("", "", "");
    let (served, log) = script(
        &fleet,
        &plan_secs(60),
        HashMap::from([("a", vec![status(400, None)])]),
    )
    .await;
    let e = served.err().unwrap();
    assert_eq!(names(&log), ["a"]);
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_caps_retries_under_sustained_failure() {
    let fleet = fleet(
        ", retries: {attempts: 1, budget_ratio: 0.1, budget_min_per_second: 0}, breaker: {consecutive_failures: 0, failure_rate: 1.0}",
        "",
        "",
    );
    let only_a = &fleet[..1];
    let mut retried = 0;
    for _ in 0..100 {
        let (served, log) = script(
            only_a,
            &plan_secs(60),
            HashMap::from([("a", vec![status(500, None), status(500, None)])]),
        )
        .await;
        assert!(served.is_err());
        retried += log.len() - 1;
    }
    // 10% of 100 requests (the window is 10s; paused time barely moves).
    assert!((9..=11).contains(&retried), "{retried} retries");
}

#[tokio::test(start_paused = true)]
async fn an_ejected_deployment_is_skipped_until_its_probe() {
    let fleet = fleet(
        ", breaker: {consecutive_failures: 2, base_ejection: 5s}, retries: {attempts: 0}",
        "",
        "",
    );
    let fail = || HashMap::from([("a", vec![status(500, None)])]);
    for _ in 0..2 {
        let (served, log) = script(&fleet, &plan_secs(60), fail()).await;
        assert_eq!(served.unwrap().deployment.name, "b");
        assert_eq!(names(&log), ["a", "b"]);
    }
    // Ejected: not tried, reported as skipped.
    let (served, log) = script(&fleet, &plan_secs(60), fail()).await;
    let served = served.unwrap();
    assert_eq!(names(&log), ["b"]);
    assert!(matches!(served.skipped[0].reason, SkipReason::Ejected(_)));
    // Every allowed deployment ejected: 503 with Retry-After, nothing attempted.
    let (e, log) = script(&fleet[..1], &plan_secs(60), fail()).await;
    let e = e.err().unwrap();
    assert!(log.is_empty());
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(e.retry_after().is_some());
    // After the ejection, one probe; it succeeds and the deployment is back.
    tokio::time::advance(Duration::from_secs(6)).await;
    let (served, log) = script(&fleet, &plan_secs(60), HashMap::new()).await;
    assert_eq!(served.unwrap().deployment.name, "a");
    assert_eq!(names(&log), ["a"]);
    let (_, log) = script(&fleet, &plan_secs(60), HashMap::new()).await;
    assert_eq!(names(&log), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_probes_success_is_recorded_at_once_though_its_answer_would_record_it_later() {
    let fleet = fleet(
        ", breaker: {consecutive_failures: 1, base_ejection: 5s}, retries: {attempts: 0}",
        "",
        "",
    );
    let fail = HashMap::from([("a", vec![status(500, None)])]);
    let (served, _) = script(&fleet, &plan_secs(60), fail).await;
    assert_eq!(served.unwrap().deployment.name, "b", "a ejected");
    tokio::time::advance(Duration::from_secs(6)).await;
    // The probe is a stream: left to it, the record would wait on its client.
    let decision = Decision::allowing(fleet.to_vec());
    let probe = run(&decision, &plan_secs(60), |_| async { Ok("stream") }).await;
    assert_eq!(probe.unwrap().deployment.name, "a");
    // Recorded already: `a` takes requests again (half-open, it would be skipped).
    let (_, log) = script(&fleet, &plan_secs(60), HashMap::new()).await;
    assert_eq!(names(&log), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_retries_and_fallbacks() {
    let fleet = fleet(
        ", retries: {attempts: 5, backoff: 2s, max_backoff: 2s}, breaker: {consecutive_failures: 0}",
        "",
        "",
    );
    let only_a = &fleet[..1];
    let failing = || HashMap::from([("a", (0..6).map(|_| status(503, None)).collect())]);
    // Backoff waits are under 2 s each; no attempt starts after the deadline.
    let (served, log) = script(only_a, &plan_secs(5), failing()).await;
    assert!(served.is_err());
    assert!(log.len() >= 3, "{log:?}");
    assert!(
        log.iter().all(|(_, at)| *at < Duration::from_secs(5)),
        "{log:?}"
    );
    // A Retry-After that ends past the deadline is not waited for.
    let short = HashMap::from([("a", vec![status(503, Some("4")), status(503, Some("4"))])]);
    let (e, log) = script(only_a, &plan_secs(1), short).await;
    assert_eq!(names(&log), ["a"]);
    assert_eq!(e.err().unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_outlives_the_deadline_ends_the_request_with_504() {
    let fleet = fleet("", "", "");
    let decision = Decision::allowing(fleet.clone());
    let tried = Mutex::new(Vec::new());
    let result: Result<Served<()>, _> = run(&decision, &plan_secs(5), |d| {
        tried.lock().unwrap().push(d.name.clone());
        async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    })
    .await;
    let e = result.err().unwrap();
    assert_eq!(tried.into_inner().unwrap(), ["a"]);
    assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_deployment_a_reload_disallowed_is_not_tried() {
    let fleet = fleet("", "", "");
    let not_a = |d: &Deployment| d.name != "a";
    let plan = Plan {
        deadline: Instant::now() + Duration::from_secs(60),
        allowed: &not_a,
        gate: None,
        health: health(),
        trace: &None,
    };
    let (served, log) = script(&fleet, &plan, HashMap::new()).await;
    let served = served.unwrap();
    assert_eq!(names(&log), ["b"]);
    assert!(matches!(served.skipped[0].reason, SkipReason::Reloaded));
}

#[tokio::test(start_paused = true)]
async fn the_client_is_told_a_validated_clamped_retry_after() {
    for (sent, told) in [
        ("999999", Some("300")),
        ("0.2", Some("1")),
        ("-1", None),
        ("soon", None),
        ("1e999", None),
    ] {
        // Fresh deployments each time: a cool-down from the last case must not answer.
        let fleet = fleet("", "", "");
        let (e, _) = script(
            &fleet[..1],
            &plan_secs(60),
            HashMap::from([("a", (0..4).map(|_| status(429, Some(sent))).collect())]),
        )
        .await;
        let e = e.err().unwrap();
        assert_eq!(
            e.retry_after().as_ref().map(|v| v.to_str().unwrap()),
            told,
            "{sent}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_narrowing_reload_is_not_made() {
    let fleet = fleet(", retries: {attempts: 3, on: [5xx]}", "", "");
    // The reload lands during the first backoff: from then on only `b` is allowed.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let allowed =
        |d: &Deployment| calls.load(std::sync::atomic::Ordering::SeqCst) == 0 || d.name == "b";
    let plan = Plan {
        deadline: Instant::now() + Duration::from_secs(60),
        allowed: &allowed,
        gate: None,
        health: health(),
        trace: &None,
    };
    let decision = Decision::allowing(fleet[..2].to_vec());
    let log = Mutex::new(Vec::new());
    let served = run(&decision, &plan, |d| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        log.lock().unwrap().push(d.name.clone());
        let fail = d.name == "a";
        async move { if fail { Err(status(500, None)) } else { Ok(()) } }
    })
    .await;
    let served = served.unwrap_or_else(|_| panic!("b answers"));
    assert_eq!(*log.lock().unwrap(), ["a", "b"]);
    assert!(matches!(served.skipped[0].reason, SkipReason::Reloaded));
}

#[tokio::test(start_paused = true)]
async fn attempt_errors_are_cleaned_of_key_like_text() {
    let fleet = fleet("", "", "");
    let leaky =
        AttemptError::Invalid("invalid type: string \"sk-live-0123456789abcdefXYZ\"".into());
    let (e, _) = script(
        &fleet[..1],
        &plan_secs(60),
        HashMap::from([("a", vec![leaky])]),
    )
    .await;
    let text = e.err().unwrap().to_string();
    assert!(!text.contains("0123456789abcdef"), "{text}");
}
