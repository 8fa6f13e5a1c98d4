//! Policies as configured: the YAML types, the files shipped inside the binary, and the checks
//! a policy must pass to load. The `policy` module compiles them and decides by them.

pub(crate) mod builtin;
pub mod spec;
pub(crate) mod validate;

/// The name of the shipped policy that allows everything.
pub(crate) const DEFAULT_POLICY: &str = "default";
