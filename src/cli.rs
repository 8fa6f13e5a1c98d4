//! The command line: `serve`, `check`, `key new`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "modelgate",
    version,
    about = "A model gateway that routes by openness, license and cost"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (and the admin listener) until SIGTERM.
    Serve {
        /// The entry file; without it the built-in configuration is served.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// API address, overriding the file's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin address, overriding the file's `admin_listen`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Log line format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Validate a configuration and print every problem; exit 1 if there is any.
    Check {
        /// The entry file; without it the built-in configuration is checked.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Client keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print a fresh key, and the entry to paste under `keys:`.
    New {
        /// The tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        /// A name for the key that is not secret (shown in logs).
        #[arg(long)]
        id: Option<String>,
    },
}
