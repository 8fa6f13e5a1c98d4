//! The header of a GGUF file: the `general.*` keys a model file describes itself with
//! (`general.basename`, `general.size_label`, `general.finetune`, `general.license`) and its
//! quantization. Read with bounds: the header is followed by gigabytes of tensors, and a
//! tokenizer array of 150 000 strings comes before some `general.*` keys, so everything else
//! is skipped, never held.

use std::io::{self, BufRead, Read};

use crate::catalog::identify::Metadata;

/// The most header bytes read before giving up (tokenizers take a few MiB).
const MAX_HEADER: u64 = 64 << 20;
/// The longest string value kept.
const MAX_STRING: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GgufError {
    #[error("not a GGUF file")]
    NotGguf,
    #[error("GGUF version {0} is not read")]
    Version(u32),
    #[error("the GGUF header is malformed ({0})")]
    Malformed(&'static str),
    #[error("the GGUF header is longer than {} MiB", MAX_HEADER >> 20)]
    TooLong,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a GGUF header says.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Header {
    pub(crate) metadata: Metadata,
    /// `general.file_type`, by name (`Q4_K_M`).
    pub(crate) quantization: Option<String>,
    /// `<architecture>.context_length`.
    pub(crate) context_length: Option<u64>,
}

struct Limited<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Limited<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.take(N as u64)?;
        self.inner.read_exact(&mut b)?;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<(), GgufError> {
        self.read = self.read.saturating_add(n);
        if self.read > MAX_HEADER {
            return Err(GgufError::TooLong);
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.take(n)?;
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(GgufError::Malformed("truncated"));
        }
        Ok(())
    }

    /// A string: kept when short, skipped otherwise.
    fn string(&mut self) -> Result<Option<String>, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            self.skip(len)?;
            return Ok(None);
        }
        self.take(len)?;
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf)?;
        Ok(String::from_utf8(buf).ok())
    }
}

/// A value: what is kept of it.
enum Value {
    Text(String),
    Number(u64),
    Other,
}

/// Bytes of one scalar of each fixed-size type.
fn scalar_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn value<R: Read>(r: &mut Limited<R>, t: u32, depth: u8) -> Result<Value, GgufError> {
    Ok(match t {
        8 => r.string()?.map_or(Value::Other, Value::Text),
        4 => Value::Number(u64::from(r.u32()?)),
        10 => Value::Number(r.u64()?),
        9 => {
            if depth > 2 {
                return Err(GgufError::Malformed("nested arrays"));
            }
            let inner = r.u32()?;
            let count = r.u64()?;
            match scalar_size(inner) {
                Some(size) => r.skip(count.checked_mul(size).ok_or(GgufError::TooLong)?)?,
                None => {
                    for _ in 0..count {
                        value(r, inner, depth + 1)?;
                    }
                }
            }
            Value::Other
        }
        t => {
            r.skip(scalar_size(t).ok_or(GgufError::Malformed("unknown value type"))?)?;
            Value::Other
        }
    })
}

/// `general.file_type` by name, as llama.cpp numbers them.
fn file_type(n: u64) -> Option<&'static str> {
    Some(match n {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// Reads the header of a GGUF stream. `source` says where it came from, for the evidence.
pub(crate) fn read(input: impl BufRead, source: &str) -> Result<Header, GgufError> {
    let mut r = Limited {
        inner: input,
        read: 0,
    };
    if &r.bytes::<4>()? != b"GGUF" {
        return Err(GgufError::NotGguf);
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let _tensors = r.u64()?;
    let count = r.u64()?;
    let mut h = Header {
        metadata: Metadata {
            source: source.to_owned(),
            ..Metadata::default()
        },
        ..Header::default()
    };
    let mut architecture_context: Vec<(String, u64)> = Vec::new();
    for _ in 0..count {
        let key = r.string()?.ok_or(GgufError::Malformed("a key too long"))?;
        let t = r.u32()?;
        let v = value(&mut r, t, 0)?;
        let m = &mut h.metadata;
        match (key.as_str(), v) {
            ("general.name", Value::Text(s)) => m.name = Some(s),
            ("general.basename", Value::Text(s)) => m.basename = Some(s),
            ("general.size_label", Value::Text(s)) => m.size_label = Some(s),
            ("general.finetune", Value::Text(s)) => m.finetune = Some(s),
            ("general.license", Value::Text(s)) => m.license = Some(s),
            ("general.architecture", Value::Text(s)) => m.architecture = Some(s),
            ("general.file_type", Value::Number(n)) => {
                h.quantization = file_type(n).map(str::to_owned);
            }
            (k, Value::Number(n)) if k.ends_with(".context_length") => {
                architecture_context.push((k.trim_end_matches(".context_length").to_owned(), n));
            }
            _ => {}
        }
    }
    h.context_length = architecture_context
        .into_iter()
        .find(|(a, _)| Some(a) == h.metadata.architecture.as_ref())
        .map(|(_, n)| n);
    Ok(h)
}

/// Reads the header of the GGUF file at `path`.
/// Opens a regular file without waiting (a FIFO named `x.gguf` would block the open itself),
/// checked on the open descriptor, so nothing can be swapped in between a check and the open.
pub(crate) fn open_regular(
    path: &std::path::Path,
) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((f, meta))
}

/// Reads the header of an open GGUF file.
pub(crate) fn read_open(f: std::fs::File, path: &std::path::Path) -> Result<Header, GgufError> {
    read(
        io::BufReader::with_capacity(1 << 16, f),
        &format!("the GGUF header of {}", path.display()),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GGUF header with `kv` (strings or u32 numbers), after a large tokenizer array.
    pub(crate) fn header(kv: &[(&str, &str)], file_type: Option<u32>) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let count = kv.len() + 1 + usize::from(file_type.is_some());
        b.extend((count as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        s(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(3000u64.to_le_bytes());
        for i in 0..3000 {
            s(&mut b, &format!("tok{i}"));
        }
        for (k, v) in kv {
            s(&mut b, k);
            match v.parse::<u32>() {
                Ok(n) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(n.to_le_bytes());
                }
                Err(_) => {
                    b.extend(8u32.to_le_bytes());
                    s(&mut b, v);
                }
            }
        }
        if let Some(ft) = file_type {
            s(&mut b, "general.file_type");
            b.extend(4u32.to_le_bytes());
            b.extend(ft.to_le_bytes());
        }
        b
    }

    #[test]
    fn the_general_keys_after_a_tokenizer() {
        let bytes = header(
            &[
                ("general.architecture", "llama"),
                ("general.basename", "smollm2"),
                ("general.size_label", "135M"),
                ("general.finetune", "8k-lc100k-mix1-ep2"),
                ("general.license", "apache-2.0"),
                ("llama.context_length", "8192"),
            ],
            Some(3),
        );
        let h = read(&bytes[..], "test").unwrap();
        assert_eq!(h.metadata.basename.as_deref(), Some("smollm2"));
        assert_eq!(h.metadata.size_label.as_deref(), Some("135M"));
        assert_eq!(h.metadata.license.as_deref(), Some("apache-2.0"));
        assert_eq!(h.quantization.as_deref(), Some("Q4_1"));
        assert_eq!(h.context_length, Some(8192));
    }

    #[test]
    fn hostile_headers_are_refused_not_followed() {
        assert!(matches!(
            read(&b"GGML...."[..], "t"),
            Err(GgufError::NotGguf)
        ));
        let mut v1 = b"GGUF".to_vec();
        v1.extend(1u32.to_le_bytes());
        assert!(matches!(read(&v1[..], "t"), Err(GgufError::Version(1))));
        // A key that claims 2^60 bytes, an array of 2^62 u64s, a cut header.
        let mut huge = b"GGUF".to_vec();
        huge.extend(3u32.to_le_bytes());
        huge.extend(0u64.to_le_bytes());
        huge.extend(1u64.to_le_bytes());
        let mut key = huge.clone();
        key.extend((1u64 << 60).to_le_bytes());
        assert!(read(&key[..], "t").is_err());
        let mut arr = huge.clone();
        arr.extend(1u64.to_le_bytes());
        arr.push(b'k');
        arr.extend(9u32.to_le_bytes());
        arr.extend(10u32.to_le_bytes());
        arr.extend((1u64 << 62).to_le_bytes());
        assert!(matches!(read(&arr[..], "t"), Err(GgufError::TooLong)));
        let full = header(&[("general.basename", "x")], None);
        for cut in [5, 20, 100, full.len() - 1] {
            assert!(read(&full[..cut], "t").is_err(), "{cut}");
        }
    }
}
