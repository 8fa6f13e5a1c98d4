//! The names servers give models, reduced to one key so the catalog can match them whole:
//! `llama3.1:8b`, `Llama-3.1-8B` and `/models/llama-3.1-8b-Q4_K_M.gguf` are one name; a name is
//! never matched by a part of it (`distilgpt2` is not `gpt2`). What the reduction drops (the
//! owner of a repository, the folder of a file, the quantization) says nothing about which
//! weights these are.

/// Extensions of model files.
const EXTENSIONS: &[&str] = &[".gguf", ".bin", ".safetensors", ".pt", ".pth", ".onnx"];

/// Markers of quantization and file format, dropped from names.
const FORMATS: &[&str] = &[
    "f16", "f32", "fp16", "fp32", "bf16", "fp8", "fp4", "int4", "int8", "nf4", "awq", "gptq",
    "gguf", "ggml", "mlx", "exl2", "w4a16", "w8a8", "mxfp4",
];

/// Markers of a file's format, not of its numbers.
const CONTAINERS: &[&str] = &["gguf", "ggml", "mlx", "exl2"];

/// Whether a segment names a quantization or a file format (`q4_k_m`, `iq2_xs`, `fp16`, `4bit`).
pub(crate) fn is_quantization(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase();
    if FORMATS.contains(&s.as_str()) {
        return true;
    }
    if let Some(bits) = s.strip_suffix("bit") {
        return !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit());
    }
    let rest = s.strip_prefix('i').unwrap_or(&s);
    let Some(rest) = rest.strip_prefix('q') else {
        return false;
    };
    let mut parts = rest.split('_');
    let digits = parts.next().unwrap_or("");
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The quantization a name carries (`Q4_K_M` of `llama3.1:8b-instruct-q4_K_M`), if any.
pub(crate) fn quantization_of(name: &str) -> Option<String> {
    let base = last_part(name.trim());
    base.split(['-', ':', ' ', '.'])
        .rfind(|s| is_quantization(s) && !CONTAINERS.contains(&s.to_ascii_lowercase().as_str()))
        .map(str::to_ascii_uppercase)
}

fn last_part(name: &str) -> &str {
    let name = name.trim_end_matches(['/', '\\']);
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// Whether a name is an Ollama tag (`llama3.1:8b`, `library/qwen2.5:latest`). A tag says less
/// than its spelling suggests (`llama3.1:8b` is the instruct model; `Llama-3.1-8B` is the base
/// model), so aliases written as tags stand only for tags.
pub(crate) fn is_tag(name: &str) -> bool {
    last_part(name.trim()).contains(':')
}

/// The key a name is matched by: lower case; the last part of a path or repository id; no
/// extension, no split-file suffix, no quantization or format marker; words split on `-`, `:`,
/// `_` and spaces, and where a letter meets a digit (`llama3.1` → `llama-3.1`); joined by `-`.
pub(crate) fn key(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let mut s = last_part(&lower);
    for ext in EXTENSIONS {
        if let Some(stem) = s.strip_suffix(ext) {
            s = stem;
            break;
        }
    }
    // `-00001-of-00003`: one file of a split GGUF.
    if let Some(at) = s.rfind("-of-") {
        let (head, count) = (&s[..at], &s[at + 4..]);
        if let Some(dash) = head.rfind('-')
            && is_number(count)
            && is_number(&head[dash + 1..])
        {
            s = &head[..dash];
        }
    }
    // `llama-2-7b-chat.Q4_K_M`: a quantization after a dot.
    if let Some((stem, last)) = s.rsplit_once('.')
        && is_quantization(last)
    {
        s = stem;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for segment in s.split(['-', ':', ' ']) {
        if segment.is_empty() || is_quantization(segment) {
            continue;
        }
        for word in segment.split('_').filter(|w| !w.is_empty()) {
            let mut prev: Option<char> = None;
            for c in word.chars() {
                let boundary = prev.is_some_and(|p| p.is_ascii_alphabetic()) && c.is_ascii_digit();
                if (boundary || prev.is_none()) && !out.is_empty() {
                    out.push('-');
                }
                out.push(c);
                prev = Some(c);
            }
        }
    }
    out
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A size label as a number of parameters: `8B`, `8.0B`, `135M`, `1.5b`, `30B-A3B` (its total).
pub(crate) fn parameters(label: &str) -> Option<f64> {
    let l = label.trim().to_ascii_lowercase();
    let l = l.split(['-', ' ']).next().unwrap_or("");
    let (num, scale) = match l.chars().last()? {
        'b' => (&l[..l.len() - 1], 1e9),
        'm' => (&l[..l.len() - 1], 1e6),
        't' => (&l[..l.len() - 1], 1e12),
        'k' => (&l[..l.len() - 1], 1e3),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    (n.is_finite() && n > 0.0).then_some(n * scale)
}

/// The size a name states (`8b` in `llama-3.1-8b-instruct`), as parameters.
pub(crate) fn stated_size(name: &str) -> Option<f64> {
    let k = key(name);
    let words: Vec<&str> = k.split('-').collect();
    // The first word that is a number followed by b or m (`3.8b`; the total of `30b-a3b`).
    words.iter().find_map(|w| {
        let last = w.chars().last()?;
        if (last == 'b' || last == 'm')
            && w.len() > 1
            && w[..w.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
        {
            parameters(w)
        } else {
            None
        }
    })
}

/// Whether two sizes are the same model size: within a fifth of each other (`8.0B` reported for
/// an 8.03 B model; `3.1B` for Qwen2.5 3B), and never a 3 B for a 7 B.
pub(crate) fn same_size(a: f64, b: f64) -> bool {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    hi <= lo * 1.2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_in_its_many_spellings() {
        for (name, want) in [
            ("llama3.1:8b", "llama-3.1-8b"),
            ("Llama-3.1-8B", "llama-3.1-8b"),
            ("llama3.1:8b-instruct-q4_K_M", "llama-3.1-8b-instruct"),
            (
                "meta-llama/Meta-Llama-3.1-8B-Instruct",
                "meta-llama-3.1-8b-instruct",
            ),
            (
                "/models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
                "meta-llama-3.1-8b-instruct",
            ),
            ("deepseek-r1:8b", "deepseek-r-1-8b"),
            (
                "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
                "deepseek-r-1-distill-llama-8b",
            ),
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"),
            ("openai/gpt-4o-mini", "gpt-4o-mini"),
            ("distilgpt2", "distilgpt-2"),
            ("gpt2-xl", "gpt-2-xl"),
            ("llama-2-7b-chat.Q4_K_M.gguf", "llama-2-7b-chat"),
            (
                "Qwen2.5-72B-Instruct-Q4_K_M-00001-of-00003.gguf",
                "qwen-2.5-72b-instruct",
            ),
            ("C:\\models\\phi3_mini_4k.gguf", "phi-3-mini-4k"),
            ("model.gguf", "model"),
            ("qwen2.5:7b-instruct-fp16", "qwen-2.5-7b-instruct"),
            ("mlx-community/Qwen3-4B-4bit", "qwen-3-4b"),
            ("", ""),
        ] {
            assert_eq!(key(name), want, "{name}");
        }
    }

    #[test]
    fn quantizations_and_sizes() {
        assert!(is_quantization("Q4_K_M") && is_quantization("iq2_xs") && is_quantization("q8_0"));
        assert!(!is_quantization("qwen") && !is_quantization("q") && !is_quantization("bit"));
        assert_eq!(
            quantization_of("llama3.1:8b-instruct-q4_K_M").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(
            quantization_of("llama-2-7b-chat.Q5_0.gguf").as_deref(),
            Some("Q5_0")
        );
        assert_eq!(quantization_of("llama3.1:8b"), None);
        assert_eq!(parameters("8.0B"), Some(8e9));
        assert_eq!(parameters("135M"), Some(135e6));
        assert_eq!(parameters("30B-A3B"), Some(30e9));
        assert_eq!(parameters("big"), None);
        assert_eq!(stated_size("qwen2.5:7b-instruct"), Some(7e9));
        assert_eq!(stated_size("phi3:3.8b"), Some(3.8e9));
        assert_eq!(stated_size("qwen3:30b-a3b"), Some(30e9));
        assert_eq!(stated_size("qwen2.5:latest"), None);
        assert!(same_size(8.03e9, 8e9) && same_size(3.1e9, 3e9));
        assert!(!same_size(3.1e9, 7e9));
    }
}
