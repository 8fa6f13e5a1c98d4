//! The catalog shipped inside the binary: every file of `providers/` (a test checks none is
//! missing).

/// `(file name, contents)` of each shipped catalog file.
pub(crate) const FILES: &[(&str, &str)] = &[
    ("ai2.yaml", include_str!("../../providers/ai2.yaml")),
    ("alibaba.yaml", include_str!("../../providers/alibaba.yaml")),
    (
        "anthropic.yaml",
        include_str!("../../providers/anthropic.yaml"),
    ),
    (
        "deepseek.yaml",
        include_str!("../../providers/deepseek.yaml"),
    ),
    (
        "eleutherai.yaml",
        include_str!("../../providers/eleutherai.yaml"),
    ),
    (
        "embeddings.yaml",
        include_str!("../../providers/embeddings.yaml"),
    ),
    ("google.yaml", include_str!("../../providers/google.yaml")),
    (
        "huggingface.yaml",
        include_str!("../../providers/huggingface.yaml"),
    ),
    ("ibm.yaml", include_str!("../../providers/ibm.yaml")),
    (
        "licenses.yaml",
        include_str!("../../providers/licenses.yaml"),
    ),
    ("meta.yaml", include_str!("../../providers/meta.yaml")),
    (
        "microsoft.yaml",
        include_str!("../../providers/microsoft.yaml"),
    ),
    ("mistral.yaml", include_str!("../../providers/mistral.yaml")),
    (
        "modelgate.yaml",
        include_str!("../../providers/modelgate.yaml"),
    ),
    ("openai.yaml", include_str!("../../providers/openai.yaml")),
    ("tii.yaml", include_str!("../../providers/tii.yaml")),
];
