//! What a local backend serves, and what it says about each model: the control plane's
//! questions to vLLM, llama.cpp, Ollama and their kin. `GET {base}/models` lists the names;
//! then, per name, whatever the server offers about the weights: vLLM's `root` (the repository
//! the weights came from), Ollama's `POST /api/show` (the GGUF keys, the license, the blob's
//! digest), llama.cpp's `/props` (the file path), and the GGUF header itself when the file is
//! on a volume this process can read. The catalog decides what the evidence means
//! (`catalog::identify`); this module only gathers it, bounded in size and time.

pub(crate) mod gguf;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::catalog::identify::{Digest, Evidence, Metadata, hub_revision_of_path};
use crate::config::Endpoint;

/// Most models taken from one backend.
const MAX_MODELS: usize = 200;

/// The largest answer read from a backend (a model list, a `/api/show` with its license text).
const MAX_BYTES: usize = 4 << 20;

/// How long one question may take.
const ASK_WITHIN: Duration = Duration::from_secs(2);

/// Asks every backend of `config` that discovers its models or has its weights pinned, at
/// once; backends that do not answer are left out.
pub(crate) async fn probe_all(
    config: &crate::config::Config,
    pools: &crate::upstream::client::Pools,
) -> crate::config::Discovered {
    let endpoints: Vec<&Arc<Endpoint>> = config.discover.iter().chain(&config.verify).collect();
    let found = futures_util::future::join_all(endpoints.iter().map(|ep| async {
        match pools.control(ep.timeouts.connect) {
            Ok(client) => probe(Arc::clone(ep), client).await,
            Err(_) => Vec::new(),
        }
    }))
    .await;
    endpoints
        .iter()
        .zip(found)
        .filter(|(_, f)| !f.is_empty())
        .map(|(ep, f)| (ep.name.clone(), f))
        .collect()
}

/// How many backends [`probe_all`] asks.
pub(crate) fn probed(config: &crate::config::Config) -> usize {
    config.discover.len() + config.verify.len()
}

/// Asks `ep` what it serves and what each model is. Empty when it does not answer.
pub(crate) async fn probe(ep: Arc<Endpoint>, client: reqwest::Client) -> Vec<Evidence> {
    let Some(list) = get_json(&ep, &client, &format!("{}/models", ep.base_url)).await else {
        return Vec::new();
    };
    let mut found: Vec<Evidence> = Vec::new();
    for item in list
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        if !acceptable(&ep, id) || found.iter().any(|e| e.served == id) {
            continue;
        }
        let root = item
            .get("root")
            .and_then(Value::as_str)
            .filter(|r| acceptable(&ep, r))
            .map(str::to_owned);
        found.push(Evidence {
            served: id.to_owned(),
            root,
            ..Evidence::default()
        });
        if found.len() == MAX_MODELS {
            break;
        }
    }
    found.sort_by(|a, b| a.served.cmp(&b.served));
    let origin = origin_of(&ep.base_url);
    // llama.cpp's server names the file it loaded; one file per server.
    let props_path = match get_json(&ep, &client, &format!("{origin}/props")).await {
        Some(p) => p
            .get("model_path")
            .and_then(Value::as_str)
            .filter(|p| acceptable(&ep, p))
            .map(str::to_owned),
        None => None,
    };
    let one_model = found.len() == 1;
    let props_path = props_path.filter(|_| one_model);
    // Each model's questions at once, a few models at a time: a backend with 200 models must
    // not take 200 round trips in a row.
    let (ep, origin) = (&ep, origin);
    futures_util::stream::iter(found)
        .map(|ev| enrich(ep, &client, origin, props_path.as_deref(), ev))
        .buffered(8)
        .collect()
        .await
}

/// What else the backend (and the file it names) says about one model.
async fn enrich(
    ep: &Endpoint,
    client: &reqwest::Client,
    origin: &str,
    props_path: Option<&str>,
    mut ev: Evidence,
) -> Evidence {
    if looks_like_ollama_tag(&ev.served) {
        match post_json(
            ep,
            client,
            &format!("{origin}/api/show"),
            &serde_json::json!({"model": ev.served}),
        )
        .await
        {
            Ok(show) => read_ollama_show(&mut ev, &show, &|v| acceptable(ep, v)),
            Err(Miss::NotThere) => {}
            // Ollama, busy: its name alone would say the tag's usual model, which the pulled
            // one may not be.
            Err(Miss::Failed) => {
                ev.incomplete = Some("Ollama's /api/show did not answer".into());
            }
        }
    }
    // A path names a file on the backend's machine: the same file here only for a backend on
    // this machine (or sharing its volume), never for one elsewhere in the cluster or beyond.
    let file = [Some(ev.served.as_str()), ev.root.as_deref(), props_path]
        .into_iter()
        .flatten()
        .find(|p| p.to_ascii_lowercase().ends_with(".gguf"))
        .map(str::to_owned)
        .filter(|_| ep.locality == crate::config::spec::Locality::Local);
    if ev.metadata.is_none()
        && let Some(path) = file
    {
        read_local_gguf(ep, &mut ev, &path, ep.expect.is_some()).await;
    }
    if ev.digest.is_none()
        && let Some(rev) = ev.root.as_deref().and_then(hub_revision_of_path)
    {
        ev.digest = Some(Digest::Revision(rev));
    }
    ev
}

/// Whether a name a backend gives may be used: printable, bounded, and not carrying the key.
fn acceptable(ep: &Endpoint, name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.chars().any(char::is_control)
        // A name that carries the backend's key would reach logs, labels and answers.
        && (ep.masks.is_empty() || ep.masks.mask(name, "") == name)
}

/// `http://h:11434/v1` → `http://h:11434`: where a server's own (non-OpenAI) API lives.
fn origin_of(base: &str) -> &str {
    base.strip_suffix("/v1").unwrap_or(base)
}

/// `llama3.1:8b`, `library/qwen2.5:latest`: Ollama names models `name:tag`.
fn looks_like_ollama_tag(name: &str) -> bool {
    name.split_once(':')
        .is_some_and(|(n, t)| !n.is_empty() && !t.is_empty() && !t.contains('/'))
}

/// What Ollama's `/api/show` says: the GGUF keys (`model_info`), the family and size
/// (`details`), the license text, and the digest of the weights' blob (in the modelfile's
/// `FROM …/blobs/sha256-…`).
/// `accept` says whether a text the backend gave may be used (printable, without its key).
pub(crate) fn read_ollama_show(ev: &mut Evidence, show: &Value, accept: &dyn Fn(&str) -> bool) {
    let info = show.get("model_info");
    // What the backend says is text it chose: printable, short, and without its key (it may
    // reach answers, logs and labels).
    let clean = |v: &str| clean_text(accept, v);
    let text = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(Value::as_str)
            .and_then(clean)
    };
    let details = show.get("details");
    let detail = |k: &str| details.and_then(|d| d.get(k)).and_then(Value::as_str);
    let license = text("general.license").or_else(|| {
        show.get("license")
            .and_then(Value::as_str)
            .and_then(|l| l.lines().map(str::trim).find(|l| !l.is_empty()))
            .and_then(clean)
    });
    ev.metadata = Some(Metadata {
        source: "Ollama's /api/show".into(),
        name: text("general.name"),
        basename: text("general.basename"),
        size_label: text("general.size_label"),
        finetune: text("general.finetune"),
        license,
        architecture: text("general.architecture").or(detail("family").and_then(clean)),
        parameters: info
            .and_then(|i| i.get("general.parameter_count"))
            .and_then(Value::as_f64)
            .or_else(|| detail("parameter_size").and_then(crate::catalog::names::parameters)),
    });
    if let Some(q) =
        detail("quantization_level").filter(|q| crate::catalog::names::is_quantization(q))
    {
        ev.quantization = Some(q.to_ascii_uppercase());
    }
    let modelfile = show.get("modelfile").and_then(Value::as_str).unwrap_or("");
    // An adapter on top of the weights makes another model than the weights' own.
    if modelfile
        .lines()
        .any(|l| l.trim_start().to_ascii_uppercase().starts_with("ADAPTER "))
    {
        ev.incomplete = Some("Ollama applies an adapter to the weights".into());
        return;
    }
    if let Some(hex) = modelfile.lines().find_map(|l| {
        let from = l.trim().strip_prefix("FROM ")?;
        let (_, d) = from
            .rsplit_once("sha256-")
            .or(from.rsplit_once("sha256:"))?;
        (d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())).then_some(d)
    }) {
        ev.digest = Some(Digest::Sha256(hex.to_ascii_lowercase()));
    }
}

/// Text a backend gave, fit to show: at most 200 characters, and accepted.
fn clean_text(accept: &dyn Fn(&str) -> bool, v: &str) -> Option<String> {
    let v: String = v.chars().take(200).collect();
    accept(&v).then_some(v)
}

/// How long reading a model file's header may take.
const HEADER_WITHIN: Duration = Duration::from_secs(10);

/// Digests of files, by path, length and modification time: taken once, on a thread of their
/// own (gigabytes take a while), and remembered while the file stays the same.
enum Hashing {
    Running,
    Done(String),
    Failed,
}
type DigestCache = Mutex<Vec<((String, u64, std::time::SystemTime), Hashing)>>;
static DIGESTS: OnceLock<DigestCache> = OnceLock::new();

/// Opens the GGUF at `path` when this process can read it (a sidecar often shares the model
/// volume): its header, and its sha256 when a digest is pinned. Only regular files are opened
/// (a backend may name anything), and a read that hangs is given up.
async fn read_local_gguf(ep: &Endpoint, ev: &mut Evidence, path: &str, want_digest: bool) {
    let p = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let p = Path::new(&p);
        let (file, meta) = gguf::open_regular(p).ok()?;
        let header = gguf::read_open(file, p).ok()?;
        Some((
            header,
            (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH)),
        ))
    });
    let Ok(Ok(Some((h, (len, modified))))) = tokio::time::timeout(HEADER_WITHIN, read).await else {
        return;
    };
    let mut md = h.metadata;
    for field in [
        &mut md.name,
        &mut md.basename,
        &mut md.size_label,
        &mut md.finetune,
        &mut md.license,
        &mut md.architecture,
    ] {
        *field = field
            .take()
            .and_then(|v| clean_text(&|t| acceptable(ep, t), &v));
    }
    ev.metadata = Some(md);
    if h.quantization.is_some() {
        ev.quantization = h.quantization;
    }
    if want_digest {
        match sha256_of((path.to_owned(), len, modified)) {
            Hashing::Done(d) => ev.digest = Some(Digest::Sha256(d)),
            Hashing::Running => ev.digest_pending = true,
            Hashing::Failed => {}
        }
    }
}

/// Files whose digests are remembered: more are dropped, oldest first.
const DIGESTS_KEPT: usize = 32;

/// The sha256 of a file (by path, length and modification time), in hex, when it is known;
/// otherwise its taking is started (or still running) on a blocking thread, one per file, and a
/// later probe finds it. A file that could not be read is not tried again until it changes.
fn sha256_of(id: (String, u64, std::time::SystemTime)) -> Hashing {
    let cache = DIGESTS.get_or_init(Mutex::default);
    let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, state)) = c.iter().find(|(k, _)| *k == id) {
        return match state {
            Hashing::Running => Hashing::Running,
            Hashing::Done(d) => Hashing::Done(d.clone()),
            Hashing::Failed => Hashing::Failed,
        };
    }
    // A changed file's old digest goes; so do the oldest, past the bound.
    c.retain(|(k, _)| k.0 != id.0);
    if c.len() >= DIGESTS_KEPT {
        c.remove(0);
    }
    c.push((id.clone(), Hashing::Running));
    drop(c);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Hashing::Failed;
    };
    runtime.spawn_blocking(move || {
        let digest = hash_file(Path::new(&id.0));
        let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, state)) = c.iter_mut().find(|(k, _)| *k == id) {
            *state = digest.map_or(Hashing::Failed, Hashing::Done);
        }
    });
    Hashing::Running
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    let (mut f, _) = gguf::open_regular(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex_of(&h.finalize()))
}

fn hex_of(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// Why a question got no answer.
#[derive(Debug, PartialEq, Eq)]
enum Miss {
    /// The server does not have this API (404, 405, 501): it is another kind of server.
    NotThere,
    /// It has it but did not answer well (time, error, size, not JSON).
    Failed,
}

async fn get_json(ep: &Endpoint, client: &reqwest::Client, url: &str) -> Option<Value> {
    ask(ep, client.get(url)).await.ok()
}

async fn post_json(
    ep: &Endpoint,
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<Value, Miss> {
    let req = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    ask(ep, req).await
}

/// Sends a question with the backend's key and the gateway's hop header, and reads a JSON
/// answer to a bound within [`ASK_WITHIN`].
async fn ask(ep: &Endpoint, mut req: reqwest::RequestBuilder) -> Result<Value, Miss> {
    req = req.header(crate::hop::HOPS.clone(), crate::hop::outgoing());
    if let Some((name, value)) = &ep.auth_header {
        req = req.header(name.clone(), value.clone());
    }
    let fetch = async {
        let mut res = req.send().await.map_err(|_| Miss::Failed)?;
        let status = res.status().as_u16();
        if matches!(status, 404 | 405 | 501) {
            return Err(Miss::NotThere);
        }
        if !res.status().is_success() {
            return Err(Miss::Failed);
        }
        // Read to a bound: a backend's answers are a few KiB; a huge one is refused, not held.
        if res.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(Miss::Failed);
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|_| Miss::Failed)? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(Miss::Failed);
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice::<Value>(&body).map_err(|_| Miss::Failed)
    };
    tokio::time::timeout(ASK_WITHIN, fetch)
        .await
        .unwrap_or(Err(Miss::Failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_show_is_read_as_evidence() {
        let show = serde_json::json!({
            "license": "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\nLlama 3.1 Version Release Date: July 23, 2024",
            "modelfile": "# Modelfile generated by \"ollama show\"\nFROM /root/.ollama/models/blobs/sha256-667b0c1932bc6ffc593ed1d03f895bf2dc8dc6df21db3042284a6f4416b06a29\nTEMPLATE \"\"\"...\"\"\"",
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"], "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "llama", "general.basename": "DeepSeek-R1-Distill-Llama", "general.size_label": "8B", "general.parameter_count": 8030261312u64, "general.type": "model"}
        });
        let mut ev = Evidence {
            served: "deepseek-r1:8b".into(),
            ..Evidence::default()
        };
        read_ollama_show(&mut ev, &show, &|_| true);
        let md = ev.metadata.unwrap();
        assert_eq!(md.basename.as_deref(), Some("DeepSeek-R1-Distill-Llama"));
        assert_eq!(
            md.license.as_deref(),
            Some("LLAMA 3.1 COMMUNITY LICENSE AGREEMENT")
        );
        assert_eq!(md.parameters, Some(8_030_261_312.0));
        assert_eq!(ev.quantization.as_deref(), Some("Q4_K_M"));
        assert_eq!(
            ev.digest,
            Some(Digest::Sha256(
                "667b0c1932bc6ffc593ed1d03f895bf2dc8dc6df21db3042284a6f4416b06a29".into()
            ))
        );
    }

    #[test]
    fn names_and_origins() {
        assert!(looks_like_ollama_tag("llama3.1:8b"));
        assert!(!looks_like_ollama_tag("meta-llama/Llama-3.1-8B-Instruct"));
        assert!(!looks_like_ollama_tag("C:/models/x.gguf"));
        assert_eq!(
            origin_of("http://127.0.0.1:11434/v1"),
            "http://127.0.0.1:11434"
        );
        assert_eq!(hex_of(&[0, 255, 16]), "00ff10");
    }
}
