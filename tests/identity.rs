//! End-to-end: which model a local backend serves is established from what the backend says
//! about the weights (Ollama's `/api/show`, vLLM's `root`), not guessed from its name, and a
//! model that cannot be identified passes no policy that asks about it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use serde_json::{Value, json};
use support::backends::{FakeBackend, Served, Server, ollama_show};
use support::*;

const LLAMA_31_LICENSE: &str =
    "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\nLlama 3.1 Version Release Date: July 23, 2024\n...";
const MIT_LICENSE: &str = "MIT License\n\nCopyright (c) 2023 DeepSeek\n...";

fn info(basename: &str, size: &str, finetune: Option<&str>, license: Option<&str>) -> Value {
    let mut v = json!({"general.architecture": "llama", "general.basename": basename,
        "general.size_label": size, "general.type": "model", "general.file_type": 15,
        "llama.context_length": 131072});
    if let Some(f) = finetune {
        v["general.finetune"] = json!(f);
    }
    if let Some(l) = license {
        v["general.license"] = json!(l);
    }
    v
}

async fn models(gw: &Gateway) -> Vec<Value> {
    let text = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["data"].as_array().unwrap().clone()
}

/// The model object a deployment name belongs to, and that deployment's entry.
fn by_deployment<'a>(list: &'a [Value], name: &str) -> (&'a Value, &'a Value) {
    for m in list {
        for d in m["deployments"].as_array().unwrap() {
            if d["name"] == name {
                return (m, d);
            }
        }
    }
    panic!("no deployment {name} in {list:?}");
}

#[tokio::test]
async fn local_models_are_identified_from_their_own_metadata() {
    let ollama = FakeBackend::start(
        Server::Ollama,
        vec![
            // Ollama's library: the metadata names the model.
            Served {
                id: "llama3.1:8b".into(),
                about: ollama_show(
                    "llama",
                    "8.0B",
                    "Q4_K_M",
                    info("Meta-Llama-3.1", "8B", Some("Instruct"), Some("llama3.1")),
                    LLAMA_31_LICENSE,
                ),
            },
            // A Llama distill under a name and license text that sound like MIT.
            Served {
                id: "r1-mit:8b".into(),
                about: ollama_show(
                    "llama",
                    "8.0B",
                    "Q4_K_M",
                    info("DeepSeek-R1-Distill-Llama", "8B", None, None),
                    MIT_LICENSE,
                ),
            },
            // The same distill with its base model's license text.
            Served {
                id: "deepseek-r1:8b".into(),
                about: ollama_show(
                    "llama",
                    "8.0B",
                    "Q4_K_M",
                    info("DeepSeek-R1-Distill-Llama", "8B", None, None),
                    LLAMA_31_LICENSE,
                ),
            },
            // `latest` pulled as the 3B: the name would say the 7B.
            Served {
                id: "qwen2.5:latest".into(),
                about: ollama_show(
                    "qwen2",
                    "3.1B",
                    "Q4_K_M",
                    info("Qwen2.5", "3B", Some("Instruct"), None),
                    "Qwen RESEARCH LICENSE AGREEMENT",
                ),
            },
            // A fine-tune of a catalogued model, under the catalogued model's tag.
            Served {
                id: "llama3.2:3b".into(),
                about: ollama_show(
                    "llama",
                    "3.2B",
                    "Q4_K_M",
                    info("Acme-Support-Llama-3.2", "3B", Some("Chat"), None),
                    "",
                ),
            },
        ],
    )
    .await;
    let vllm = FakeBackend::start(
        Server::Vllm,
        vec![
            // `--served-model-name llama-8b`: the root is the repository.
            Served {
                id: "llama-8b".into(),
                about: json!("meta-llama/Llama-3.1-8B-Instruct"),
            },
            Served {
                id: "deepseek-ai/DeepSeek-R1-Distill-Llama-8B".into(),
                about: json!("deepseek-ai/DeepSeek-R1-Distill-Llama-8B"),
            },
            // A loopback proxy in front of a closed API, LiteLLM-style.
            Served {
                id: "claude-3-5-haiku-20241022".into(),
                about: Value::Null,
            },
            Served {
                id: "house-model".into(),
                about: Value::Null,
            },
        ],
    )
    .await;
    let dir = temp_dir();
    let policy = dir.join("no-llama.yaml");
    std::fs::write(
        &policy,
        "policies:\n  - name: no-llama\n    rules:\n      - name: all\n        require:\n          license: {deny: [llama3-community, llama3.1-community, llama3.2-community, llama3.3-community, llama4-community]}\n",
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\npolicies: {{paths: ['{}'], active: confidential-local}}\ndeployments:\n  - {{name: ollama, kind: openai-compatible, provider: ollama, base_url: '{}', discover: true}}\n  - {{name: vllm, kind: openai-compatible, provider: vllm, base_url: '{}', discover: true}}\n",
        policy.display(),
        ollama.base_url(),
        vllm.base_url()
    ))
    .await;
    let list = models(&gw).await;
    let expect = [
        (
            "ollama/llama3.1:8b",
            Some("llama-3.1-8b-instruct"),
            "metadata",
        ),
        ("ollama/r1-mit:8b", None, "unknown"),
        (
            "ollama/deepseek-r1:8b",
            Some("deepseek-r1-distill-llama-8b"),
            "metadata",
        ),
        ("ollama/qwen2.5:latest", None, "unknown"),
        ("ollama/llama3.2:3b", None, "unknown"),
        ("vllm/llama-8b", Some("llama-3.1-8b-instruct"), "metadata"),
        (
            "vllm/deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            Some("deepseek-r1-distill-llama-8b"),
            "name",
        ),
        (
            "vllm/claude-3-5-haiku-20241022",
            Some("claude-3-5-haiku"),
            "name",
        ),
        ("vllm/house-model", None, "unknown"),
    ];
    for (name, model, basis) in expect {
        let (m, d) = by_deployment(&list, name);
        assert_eq!(d["identified"]["basis"], basis, "{name}: {d}");
        assert!(
            d["identified"]["evidence"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{name}: {d}"
        );
        match model {
            Some(id) => {
                assert_eq!(m["id"], id, "{name}");
                assert_eq!(d["identified"]["model"], id, "{name}");
            }
            None => {
                assert_eq!(m["openness"], "unknown", "{name}: {m}");
                assert_eq!(m["license"]["id"], "unknown", "{name}: {m}");
                assert_eq!(d["locality"], "unknown", "{name}: {m}");
            }
        }
    }
    let (_, d) = by_deployment(&list, "ollama/llama3.1:8b");
    assert_eq!(d["identified"]["quantization"], "Q4_K_M");
    let (_, d) = by_deployment(&list, "ollama/qwen2.5:latest");
    let why = d["identified"]["evidence"].as_str().unwrap();
    assert!(why.contains("disagrees"), "{why}");
    // A closed model behind a loopback proxy runs at its provider.
    let (m, d) = by_deployment(&list, "vllm/claude-3-5-haiku-20241022");
    assert_eq!(
        (m["openness"].as_str(), d["locality"].as_str()),
        (Some("closed"), Some("remote"))
    );

    let ask = |model: &str, policy_label: Option<&str>| {
        let req = client()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            );
        let req = match policy_label {
            Some(l) => req.header("x-modelgate-labels", l),
            None => req,
        };
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await.unwrap_or_default();
            (
                status,
                headers,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
            )
        }
    };
    // Confidential data: never the closed model behind the proxy, never an unidentified one.
    for (model, why) in [
        ("claude-3-5-haiku-20241022", "openness closed"),
        ("house-model", "openness unknown"),
        ("r1-mit:8b", "openness unknown"),
        ("qwen2.5:latest", "openness unknown"),
        // Known by its name alone on a local address: where it runs is not known.
        (
            "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            "locality unknown",
        ),
    ] {
        let (status, _, v) = ask(model, Some("data=confidential")).await;
        assert_eq!(status, 403, "{model}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("confidential-stays-local") && message.contains(why),
            "{model}: {message}"
        );
    }
    let (status, h, v) = ask("llama-3.1-8b-instruct", Some("data=confidential")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(h["x-modelgate-identified-by"], "metadata");
    assert_eq!(h["x-modelgate-quantization"], "Q4_K_M");
    // Unlabelled traffic may use an unidentified model: this rule asks nothing about it.
    let (status, h, _) = ask("house-model", None).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-openness"], "unknown");
    assert_eq!(h["x-modelgate-identified-by"], "unknown");

    // A rule that refuses Llama-licensed models: the distill under an MIT-sounding name is
    // refused whether it is identified (Llama license) or not (unknown license).
    let gw2 = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\npolicies: {{paths: ['{}'], active: no-llama}}\ndeployments:\n  - {{name: ollama, kind: openai-compatible, provider: ollama, base_url: '{}', discover: true}}\n",
        policy.display(),
        ollama.base_url(),
    ))
    .await;
    for model in [
        "r1-mit:8b",
        "deepseek-r1-distill-llama-8b",
        "llama-3.1-8b-instruct",
        "qwen2.5:latest",
    ] {
        let r = client()
            .post(gw2.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{model}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("rule 'all'")
                && (text.contains("license llama3") || text.contains("license unknown")),
            "{model}: {text}"
        );
    }
}

#[tokio::test]
async fn refuse_unidentified_leaves_unknown_models_out_and_says_why() {
    let vllm = FakeBackend::start(
        Server::Vllm,
        vec![
            Served {
                id: "llama-8b".into(),
                about: json!("meta-llama/Llama-3.1-8B-Instruct"),
            },
            Served {
                id: "house-model".into(),
                about: Value::Null,
            },
        ],
    )
    .await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: vllm, kind: openai-compatible, base_url: '{}', discover: true, refuse_unidentified: true}}\n",
        vllm.base_url()
    ))
    .await;
    let list = models(&gw).await;
    let ids: Vec<&str> = list.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"llama-3.1-8b-instruct"), "{ids:?}");
    assert!(!ids.contains(&"house-model"), "{ids:?}");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "modelgate_deployment_withheld",
            &[("deployment", "vllm")]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "modelgate_deployment_identity",
            &[("deployment", "vllm/llama-8b"), ("basis", "metadata")]
        ),
        1.0
    );
}

#[tokio::test]
async fn check_says_what_each_backend_serves_and_what_is_wrong() {
    let vllm = FakeBackend::start(
        Server::Vllm,
        vec![
            Served {
                id: "llama-8b".into(),
                about: json!("meta-llama/Llama-3.1-8B-Instruct"),
            },
            Served {
                id: "house-model".into(),
                about: Value::Null,
            },
        ],
    )
    .await;
    let dir = temp_dir();
    let path = dir.join("modelgate.yaml");
    std::fs::write(
        &path,
        format!(
            "deployments:\n  - {{name: vllm, kind: openai-compatible, base_url: '{b}', discover: true}}\n  - {{name: pinned, kind: openai-compatible, model: llama-3.1-8b-instruct, upstream_model: llama-8b, base_url: '{b}', expect: {{sha256: '{zeros}'}}}}\n  - {{name: old, kind: openai-compatible, model: gemini-2.0-flash, base_url: 'http://127.0.0.1:9/v1'}}\n",
            b = vllm.base_url(),
            zeros = "0".repeat(64)
        ),
    )
    .unwrap();
    let notes = tokio::task::spawn_blocking(move || {
        let snapshot = modelgate::cli::load_snapshot(Some(path)).unwrap();
        modelgate::cli::check_notes(&snapshot)
    })
    .await
    .unwrap();
    let all = notes.join("\n");
    assert!(
        all.contains("'vllm/llama-8b' serves llama-3.1-8b-instruct (identified by metadata"),
        "{all}"
    );
    assert!(
        all.contains(
            "warning: deployment 'vllm/house-model' serves a model that was not identified"
        ),
        "{all}"
    );
    assert!(
        all.contains("warning: deployment 'pinned' is not served")
            && all.contains("expected sha256:0000"),
        "{all}"
    );
    assert!(
        all.contains("serves gemini-2.0-flash, which its provider retired on 2026-06-01"),
        "{all}"
    );
}

#[tokio::test]
async fn a_backend_that_starts_after_the_gateway_serves_within_seconds() {
    // A port nothing listens on yet.
    let at = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: late, kind: openai-compatible, base_url: 'http://{at}/v1', discover: true}}\n"
    ))
    .await;
    assert!(
        models(&gw)
            .await
            .iter()
            .all(|m| m["id"] != "llama-3.1-8b-instruct")
    );
    let _backend = FakeBackend::start_at(
        at,
        Server::Vllm,
        vec![Served {
            id: "llama-8b".into(),
            about: json!("meta-llama/Llama-3.1-8B-Instruct"),
        }],
    )
    .await;
    // The discovery interval is 15 s; a backend that has not answered yet is asked every second.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if models(&gw)
            .await
            .iter()
            .any(|m| m["id"] == "llama-3.1-8b-instruct")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "not discovered within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_path_a_backend_names_is_opened_only_as_a_regular_file() {
    // A backend may name anything: a FIFO that would block a reader forever, a device.
    let dir = temp_dir();
    let fifo = dir.join("pipe.gguf");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let zero = dir.join("zero.gguf");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let vllm = FakeBackend::start(
        Server::Vllm,
        vec![
            Served {
                id: fifo.display().to_string(),
                about: json!(fifo.display().to_string()),
            },
            Served {
                id: zero.display().to_string(),
                about: Value::Null,
            },
        ],
    )
    .await;
    let started = std::time::Instant::now();
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  - {{name: odd, kind: openai-compatible, base_url: '{}', discover: true}}\n",
        vllm.base_url()
    ))
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let list = models(&gw).await;
    for path in [&fifo, &zero] {
        let (m, d) = by_deployment(&list, &format!("odd/{}", path.display()));
        assert_eq!(m["openness"], "unknown");
        assert_eq!(d["identified"]["basis"], "unknown");
        let evidence = d["identified"]["evidence"].as_str().unwrap();
        assert!(!evidence.contains("GGUF header"), "{evidence}");
    }
}
