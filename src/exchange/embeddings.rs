//! ③ `POST /v1/embeddings`: the request, and the answer in OpenAI's format with float or base64
//! vectors (the OpenAI SDK asks for base64 unless told otherwise).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Usage;
use super::error::RequestError;

/// Most inputs in one request, as OpenAI allows.
const MAX_INPUTS: usize = 2048;

/// What to embed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    Texts(Vec<String>),
    /// Token ids, for backends that take them.
    Tokens(Vec<Vec<u32>>),
}

/// How vectors are written in the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Encoding {
    #[default]
    Float,
    Base64,
}

/// One embeddings request.
#[derive(Debug)]
pub struct EmbeddingsRequest {
    pub(crate) model: String,
    pub(crate) input: Input,
    pub(crate) encoding: Encoding,
    pub(crate) dimensions: Option<u32>,
    /// Other fields, passed through to OpenAI-compatible backends.
    pub(crate) extra: Vec<(String, Box<RawValue>)>,
}

#[derive(Deserialize)]
struct Wire {
    model: Option<String>,
    input: Option<Box<RawValue>>,
    #[serde(default)]
    encoding_format: Option<Encoding>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl EmbeddingsRequest {
    pub(crate) fn parse(body: &[u8], max_depth: usize) -> Result<EmbeddingsRequest, RequestError> {
        super::depth::check_depth(body, max_depth)?;
        let w: Wire =
            serde_json::from_slice(body).map_err(|e| RequestError::Json(e.to_string()))?;
        let model = w
            .model
            .filter(|m| !m.is_empty())
            .ok_or_else(|| RequestError::missing("model"))?;
        let raw = w.input.ok_or_else(|| RequestError::missing("input"))?;
        let input = if let Ok(s) = serde_json::from_str::<String>(raw.get()) {
            Input::Texts(vec![s])
        } else if let Ok(v) = serde_json::from_str::<Vec<String>>(raw.get()) {
            Input::Texts(v)
        } else if let Ok(t) = serde_json::from_str::<Vec<u32>>(raw.get()) {
            Input::Tokens(vec![t])
        } else if let Ok(t) = serde_json::from_str::<Vec<Vec<u32>>>(raw.get()) {
            Input::Tokens(t)
        } else {
            return Err(RequestError::invalid(
                "input",
                "'input' must be a string, an array of strings, an array of token ids or an array of such arrays",
            ));
        };
        let n = match &input {
            Input::Texts(t) => {
                if t.iter().any(String::is_empty) {
                    return Err(RequestError::invalid(
                        "input",
                        "'input' must not contain empty strings",
                    ));
                }
                t.len()
            }
            Input::Tokens(t) => {
                if t.iter().any(Vec::is_empty) {
                    return Err(RequestError::invalid(
                        "input",
                        "'input' must not contain empty token arrays",
                    ));
                }
                t.len()
            }
        };
        if n == 0 || n > MAX_INPUTS {
            return Err(RequestError::invalid(
                "input",
                format!("'input' must have 1 to {MAX_INPUTS} items"),
            ));
        }
        for k in w.extra.keys() {
            if [
                "api_base",
                "base_url",
                "api_key",
                "custom_llm_provider",
                "extra_headers",
            ]
            .contains(&k.as_str())
            {
                return Err(RequestError::unsupported(
                    k,
                    "upstreams and keys are set by the gateway's configuration",
                ));
            }
        }
        let extra = w
            .extra
            .into_iter()
            .filter_map(|(k, v)| RawValue::from_string(v.to_string()).ok().map(|r| (k, r)))
            .collect();
        Ok(EmbeddingsRequest {
            model,
            input,
            encoding: w.encoding_format.unwrap_or_default(),
            dimensions: w.dimensions,
            extra,
        })
    }

    /// Bytes of text to embed, for estimates.
    pub(crate) fn text_len(&self) -> usize {
        match &self.input {
            Input::Texts(t) => t.iter().map(String::len).sum(),
            Input::Tokens(t) => t.iter().map(|x| x.len() * 4).sum(),
        }
    }

    /// How many inputs (each with its own special tokens).
    pub(crate) fn count(&self) -> usize {
        match &self.input {
            Input::Texts(t) => t.len(),
            Input::Tokens(t) => t.len(),
        }
    }

    /// The input as OpenAI carries it.
    pub(crate) fn input_json(&self) -> serde_json::Value {
        match &self.input {
            Input::Texts(t) => serde_json::json!(t),
            Input::Tokens(t) => serde_json::json!(t),
        }
    }
}

/// Vectors, as an upstream gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub(crate) model: String,
    pub(crate) vectors: Vec<Vec<f32>>,
    pub(crate) usage: Option<Usage>,
}

#[derive(Serialize)]
struct ListOut<'a> {
    object: &'static str,
    data: Vec<ItemOut>,
    model: &'a str,
    usage: UsageOut,
}

#[derive(Serialize)]
struct ItemOut {
    object: &'static str,
    index: usize,
    embedding: VectorOut,
}

#[derive(Serialize)]
#[serde(untagged)]
enum VectorOut {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Little-endian float32s, base64 encoded, as OpenAI's `encoding_format: base64` gives them.
pub fn base64_f32(v: &[f32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The answer in OpenAI's format.
pub(crate) fn to_json(e: &Embeddings, encoding: Encoding, usage: &Usage) -> Bytes {
    let data = e
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| ItemOut {
            object: "embedding",
            index,
            embedding: match encoding {
                Encoding::Float => VectorOut::Float(v.clone()),
                Encoding::Base64 => VectorOut::Base64(base64_f32(v)),
            },
        })
        .collect();
    let out = ListOut {
        object: "list",
        data,
        model: &e.model,
        usage: UsageOut {
            prompt_tokens: usage.prompt_tokens,
            total_tokens: usage.prompt_tokens,
        },
    };
    Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_of_every_shape() {
        let p = |s: &str| EmbeddingsRequest::parse(s.as_bytes(), 64);
        assert_eq!(
            p(r#"{"model":"m","input":"a"}"#).unwrap().input,
            Input::Texts(vec!["a".into()])
        );
        assert_eq!(
            p(r#"{"model":"m","input":["a","b"]}"#).unwrap().input,
            Input::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            p(r#"{"model":"m","input":[1,2]}"#).unwrap().input,
            Input::Tokens(vec![vec![1, 2]])
        );
        assert_eq!(
            p(r#"{"model":"m","input":[[1],[2]]}"#).unwrap().input,
            Input::Tokens(vec![vec![1], vec![2]])
        );
        let r = p(
            r#"{"model":"m","input":"a","encoding_format":"base64","dimensions":256,"user":"u"}"#,
        )
        .unwrap();
        assert_eq!(r.encoding, Encoding::Base64);
        assert_eq!(r.dimensions, Some(256));
        assert_eq!(r.extra[0].0, "user");
        for bad in [
            r#"{"input":"a"}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","input":""}"#,
            r#"{"model":"m","input":[]}"#,
            r#"{"model":"m","input":5}"#,
            r#"{"model":"m","input":"a","encoding_format":"hex"}"#,
            r#"{"model":"m","input":"a","api_base":"http://x"}"#,
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_is_little_endian_float32() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    }
}
