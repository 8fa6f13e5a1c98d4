//! Configuration problems: each names the file, line and field, and loading collects all of
//! them before refusing a configuration.

use std::fmt;
use std::sync::Arc;

use serde_saphyr::Location;

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file, as named in the configuration (or `<built-in>/...` for shipped files).
    pub(crate) file: Arc<str>,
    /// 1-based line, 0 when the problem has no single place (a missing file).
    pub(crate) line: u64,
    pub(crate) column: u64,
    /// Field path, `deployments[2].model`.
    pub(crate) path: String,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}", self.file)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading, in the order found.
#[derive(Clone, Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub(crate) fn at(
        &mut self,
        file: &Arc<str>,
        loc: Location,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(Problem {
            file: file.clone(),
            line: loc.line(),
            column: loc.column(),
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn file(&mut self, file: &Arc<str>, message: impl Into<String>) {
        self.0.push(Problem {
            file: file.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
