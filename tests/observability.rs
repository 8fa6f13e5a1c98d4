//! Observability as a user sees it: `promtool check metrics` on a live `/metrics`; a real
//! Prometheus server scraping a gateway that served traffic, queried with PromQL for requests
//! and cost per openness class; every expression of the Grafana dashboard and the alert rules
//! checked by `promtool` and against the metric names a live gateway exports; the example
//! configurations of `deploy/kubernetes` loaded by the gateway's own loader.
//!
//! Prometheus and promtool come from Debian's `prometheus` package (`.ci/run` installs it and
//! sets `MODELGATE_REQUIRE_PROMETHEUS=1`); without them these tests say so and skip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("MODELGATE_REQUIRE_PROMETHEUS").is_err(),
            "{name} is required (MODELGATE_REQUIRE_PROMETHEUS is set) but not on PATH"
        );
        eprintln!("skipped: {name} is not installed (Debian package `prometheus`)");
    }
    found
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A gateway with a local open-weight model, a local open-source one, a closed API at its list
/// price, and a failing deployment with a backup, under the `company` policy; and the fakes.
async fn fleet() -> (Gateway, Vec<FakeUpstream>) {
    let ok = |t: &str| Script::Ok { text: t.into() };
    let llama = FakeUpstream::start(ok("llama"), Some(CANARY_KEY)).await;
    let smol = FakeUpstream::start(ok("smol"), Some(CANARY_KEY)).await;
    let closed = FakeUpstream::start(ok("closed"), Some(CANARY_KEY)).await;
    let broken = FakeUpstream::start(Script::status(503, None), Some(CANARY_KEY)).await;
    let backup = FakeUpstream::start(ok("backup"), Some(CANARY_KEY)).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: company}}\ntenants:\n  - {{name: default, limits: {{usd_per_day: 100, tokens_per_minute: 50000}}}}\ndeployments:\n{}{}{}{}  - {{name: closed-gpt-4o, kind: openai, model: gpt-4o, base_url: '{}', api_key_env: CANARY, locality: remote, data: {{retains_prompts: true}}}}\n",
        deployment("local-llama", "llama-3.1-8b-instruct", &llama),
        deployment("local-smol", "smollm2-135m-instruct", &smol),
        deployment("qwen-broken", "qwen3-8b", &broken),
        deployment("qwen-backup", "qwen3-8b", &backup)
            .replace("}\n", ", price: {input: 1, output: 1}}\n"),
        closed.base_url()
    );
    (
        Gateway::start(&yaml).await,
        vec![llama, smol, closed, broken, backup],
    )
}

async fn ask(gw: &Gateway, model: &str, stream: bool, labels: Option<&str>) -> u16 {
    let mut rb = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        );
    if let Some(l) = labels {
        rb = rb.header("x-modelgate-labels", l);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    r.bytes().await.unwrap();
    status
}

/// Traffic that touches every metric: answers from each openness class, a stream, a
/// fallback with retries, a policy refusal, a reload.
async fn traffic(gw: &Gateway) {
    for _ in 0..3 {
        assert_eq!(ask(gw, "llama-3.1-8b-instruct", false, None).await, 200);
    }
    assert_eq!(ask(gw, "smollm2-135m-instruct", true, None).await, 200);
    for _ in 0..2 {
        assert_eq!(ask(gw, "gpt-4o", false, None).await, 200);
    }
    assert_eq!(ask(gw, "qwen3-8b", false, None).await, 200);
    assert_eq!(
        ask(gw, "gpt-4o", false, Some("data=confidential")).await,
        403
    );
    // Over the tenant's tokens per minute whatever the minute: 60,000 tokens asked for.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(json!({"model": "gpt-4o", "max_tokens": 60000, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    gw.running.state.reload();
}

#[tokio::test]
async fn promtool_accepts_the_live_metrics() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let (gw, _fakes) = fleet().await;
    traffic(&gw).await;
    let text = gw.metrics().await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server on loopback scraping the gateway's admin listener every second.
struct Prometheus {
    child: Child,
    base: String,
    /// Its configuration and storage, removed after it is stopped.
    _dir: support::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, target: &str) -> Prometheus {
        let dir = temp_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: modelgate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// An instant query: each series' labels and value.
    async fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let encoded: String = q
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let r = client()
            .get(format!("{}/api/v1/query?query={encoded}", self.base))
            .send()
            .await;
        let Ok(r) = r else { return Vec::new() };
        let v: Value =
            serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default();
        v.pointer("/data/result")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let labels = s["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let value = s["value"][1]
                            .as_str()
                            .unwrap_or("NaN")
                            .parse()
                            .unwrap_or(f64::NAN);
                        (labels, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `sum by (label) (expr)` as a map, once the server has scraped it.
    async fn by(&self, label: &str, expr: &str, want_keys: usize) -> BTreeMap<String, f64> {
        let q = format!("sum by ({label}) ({expr})");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m: BTreeMap<String, f64> = self
                .query(&q)
                .await
                .into_iter()
                .map(|(l, v)| (l.get(label).cloned().unwrap_or_default(), v))
                .collect();
            if m.len() >= want_keys {
                return m;
            }
            assert!(Instant::now() < deadline, "no answer to {q}: {m:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_sees_requests_and_cost_by_openness_class() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let (gw, _fakes) = fleet().await;
    traffic(&gw).await;
    let prom = Prometheus::start(&prometheus, &gw.running.admin_addr.to_string());

    let answers = prom
        .by(
            "openness",
            r#"modelgate_upstream_attempts_total{job="modelgate",result="ok"}"#,
            3,
        )
        .await;
    // llama ×3 and the qwen backup (open-weight), smollm2 (open-source), GPT-4o ×2 (closed).
    assert_eq!(answers["open-weight"], 4.0, "{answers:?}");
    assert_eq!(answers["open-source"], 1.0, "{answers:?}");
    assert_eq!(answers["closed"], 2.0, "{answers:?}");

    let cost = prom.by("openness", "modelgate_cost_usd_total", 3).await;
    // GPT-4o at $2.50 / $10 per million: 11 prompt and 7 completion tokens, twice.
    let want = 2.0 * (11.0 * 2.5 + 7.0 * 10.0) / 1e6;
    assert!((cost["closed"] - want).abs() < 1e-9, "{cost:?}");
    assert_eq!(cost["open-source"], 0.0);
    // The backup deployment has a price of its own.
    assert!(cost["open-weight"] > 0.0);

    let requests = prom.by("status_class", "modelgate_requests_total", 2).await;
    assert_eq!(requests["2xx"], 7.0, "{requests:?}");
    assert_eq!(requests["4xx"], 2.0, "{requests:?}");
    let refusals = prom
        .by("reason", "modelgate_policy_refusals_total", 1)
        .await;
    assert!(refusals["openness"] >= 1.0, "{refusals:?}");
    let fallbacks = prom.by("policy", "modelgate_fallbacks_total", 1).await;
    assert_eq!(fallbacks["company"], 1.0);
}

#[tokio::test]
async fn on_a_fresh_gateway_every_named_series_exists_and_the_first_refused_reload_alerts() {
    let (gw, _fakes) = fleet().await;
    // Nothing served: every metric the dashboard and the alert rules name is there already.
    let text = gw.metrics().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for (whence, e) in &expressions() {
        for n in regex_lite_names(e) {
            assert!(
                exported.contains(n.as_str()),
                "{whence} uses {n}, which a gateway that has served nothing does not export"
            );
        }
    }
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let prom = Prometheus::start(&prometheus, &gw.running.admin_addr.to_string());
    let alert = r#"increase(modelgate_config_reloads_total{result="error"}[10m])"#;
    // Prometheus has the series at 0 before anything went wrong.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prom.query(alert).await.is_empty() {
        assert!(Instant::now() < deadline, "Prometheus never saw the series");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(prom.query(alert).await[0].1, 0.0);
    // One refused reload: the alert's expression is above 0 within two scrapes (1 s apart).
    let good = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, format!("nonsense: [\n{good}")).unwrap();
    assert!(matches!(
        gw.running.state.reload(),
        modelgate::server::reload::Reloaded::Refused { .. }
    ));
    let refused_at = Instant::now();
    loop {
        if prom.query(&format!("{alert} > 0")).await.len() == 1 {
            break;
        }
        assert!(
            refused_at.elapsed() < Duration::from_millis(3500),
            "the alert's expression did not fire within two scrapes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every PromQL expression of the dashboard and the alert rules, with Grafana's variables
/// replaced by what they stand for.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/modelgate.json")).unwrap(),
    )
    .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap();
            out.push((
                format!("panel '{}'", p["title"].as_str().unwrap_or("")),
                e.replace("$__rate_interval", "5m").replace("$job", ".*"),
            ));
        }
    }
    let alerts: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    for g in alerts["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            out.push((
                format!("alert {}", r["alert"].as_str().unwrap()),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn dashboard_and_alert_expressions_are_valid_and_name_exported_metrics() {
    let exprs = expressions();
    assert!(exprs.len() >= 30, "{}", exprs.len());

    // Only names a live gateway exports (after traffic that touches every metric).
    let (gw, _fakes) = fleet().await;
    traffic(&gw).await;
    let text = gw.metrics().await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    // And every metric the gateway exports is in the metric reference (docs/metrics.md).
    let readme = std::fs::read_to_string(repo("docs/metrics.md")).unwrap();
    for family in text.lines().filter_map(|l| l.strip_prefix("# HELP ")) {
        let family = family.split(' ').next().unwrap();
        assert!(
            readme.contains(&format!("`{family}`")),
            "{family} is not in docs/metrics.md's metric reference"
        );
    }
    let name = regex_lite_names;
    for (whence, e) in &exprs {
        for n in name(e) {
            assert!(
                exported.contains(n.as_str()),
                "{whence} uses {n}, which the gateway does not export"
            );
        }
    }

    let Some(promtool) = tool("promtool") else {
        return;
    };
    // promtool checks rule files: each expression becomes a recording rule.
    let dir = temp_dir();
    let rules = dir.join("exprs.yml");
    let mut y = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        y.push_str(&format!(
            "      - record: modelgate:check_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    std::fs::write(&rules, y).unwrap();
    for file in [rules, repo("deploy/prometheus/alerts.yml")] {
        let out = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check rules {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The metric names (`modelgate_…`, `gen_ai_…`) an expression mentions.
fn regex_lite_names(e: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = e.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &e[i..];
        if (rest.starts_with("modelgate_") || rest.starts_with("gen_ai_"))
            && (i == 0
                || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b':'))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_kubernetes_examples_hold_configurations_the_gateway_accepts() {
    for file in [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/gateway.yaml",
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        // The `modelgate.yaml: |` block of the ConfigMap, unindented.
        let start = text.find("  modelgate.yaml: |\n").unwrap() + "  modelgate.yaml: |\n".len();
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let dir = temp_dir();
        let path = dir.join("modelgate.yaml");
        std::fs::write(&path, &block).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_modelgate"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: the gateway refuses its configuration:\n{}{}\n{block}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
