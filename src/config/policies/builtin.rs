//! The policies shipped inside the binary: every file of `policies/` (a test checks none is
//! missing).

/// `(file name, contents)` of each shipped policy file.
pub(crate) const FILES: &[(&str, &str)] = &[
    (
        "cheapest-capable.yaml",
        include_str!("../../../policies/cheapest-capable.yaml"),
    ),
    (
        "commercial-safe.yaml",
        include_str!("../../../policies/commercial-safe.yaml"),
    ),
    (
        "company.yaml",
        include_str!("../../../policies/company.yaml"),
    ),
    (
        "confidential-local.yaml",
        include_str!("../../../policies/confidential-local.yaml"),
    ),
    (
        "default.yaml",
        include_str!("../../../policies/default.yaml"),
    ),
    (
        "research-open-source.yaml",
        include_str!("../../../policies/research-open-source.yaml"),
    ),
];
