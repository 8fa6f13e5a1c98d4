//! Boot: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use modelgate::cli::{Cli, Command, KeyCommand};
use modelgate::config::Origin;
use modelgate::config::keys;
use modelgate::config::load::{self, Overrides, ProcessEnv};
use modelgate::telemetry::{self, LogFormat};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let code = run(Cli::parse());
    // Log lines are written by a thread of their own: let it finish before exiting.
    telemetry::flush();
    code
}

/// The runtime: on one thread when the process has one core to run on (a sidecar's usual CPU
/// limit, or `taskset`), as linkerd2-proxy does. A multi-threaded runtime with a single worker
/// still pays, on every request, for what only several workers need: hand-offs through shared
/// queues and their atomics, and its queue tuning's two clock reads per batch of tasks.
/// `TOKIO_WORKER_THREADS` (tokio's own variable) overrides the count.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let threads = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .thread_name("modelgate-rt")
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("modelgate-rt")
            .enable_all()
            .build()
    }
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
            log_format,
            log_level,
        } => {
            telemetry::init(log_format, &log_level);
            let origin = config.map_or(Origin::Embedded, Origin::File);
            let runtime = match runtime() {
                Ok(r) => r,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            let overrides = Overrides {
                listen,
                admin_listen,
                ..Overrides::default()
            };
            match runtime.block_on(modelgate::server::run(origin, overrides)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
        Command::Check { config } => check(config),
        Command::Explain {
            config,
            request,
            labels,
            tenant,
            key,
            json,
        } => {
            telemetry::init(LogFormat::Text, "warn");
            match modelgate::cli::explain(config, &request, &labels, tenant, key, json) {
                Ok((text, allowed)) => {
                    out(text.trim_end());
                    if allowed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(&e),
            }
        }
        Command::Test { files, config } => {
            telemetry::init(LogFormat::Text, "warn");
            policy_test(files, config.as_deref())
        }
        Command::Diff {
            config,
            policy_files,
            json,
        } => {
            telemetry::init(LogFormat::Text, "warn");
            diff(&config, &policy_files, json)
        }
        Command::Catalog { config, json } => {
            telemetry::init(LogFormat::Text, "warn");
            match modelgate::cli::catalog(config, json) {
                Ok(text) => {
                    out(text.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Key {
            command: KeyCommand::New { tenant, id },
        } => match keys::generate() {
            Ok(key) => {
                let id = id.unwrap_or_else(|| format!("{tenant}-key"));
                out(&format!("key:    {key}"));
                out(&format!("sha256: {}", keys::hash_hex(&key)));
                out("");
                out("Give the key to the client and add this under `keys:` in modelgate.yaml:");
                out(&format!(
                    "  - {{ id: {id}, tenant: {tenant}, sha256: {} }}",
                    keys::hash_hex(&key)
                ));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("no randomness available: {e}")),
        },
    }
}

/// `modelgate check`: the files' problems, or what the configuration serves.
fn check(config: Option<std::path::PathBuf>) -> ExitCode {
    telemetry::init(LogFormat::Text, "warn");
    let origin = config.map_or(Origin::Embedded, Origin::File);
    // The files first; then the backends, asked once, for what they serve.
    match load::load(&origin, &Overrides::default(), &ProcessEnv) {
        Ok(loaded) => {
            out(&format!(
                "configuration is valid: {} deployments, {} discovered backends, {} catalog models, hash {}",
                loaded.config.deployments.len(),
                loaded.config.discover.len(),
                loaded.config.catalog.models.len(),
                loaded.config.hash
            ));
            for d in &loaded.disabled {
                out(&format!(
                    "note: deployment '{d}' is left out: its key is not set"
                ));
            }
            if let Ok(snapshot) = modelgate::cli::load_snapshot(match &origin {
                Origin::File(p) => Some(p.clone()),
                _ => None,
            }) {
                for n in modelgate::cli::check_notes(&snapshot) {
                    out(&n);
                }
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            err(&format!("{problems}"));
            err(&format!(
                "{} problem(s); the configuration is invalid",
                problems.len()
            ));
            ExitCode::FAILURE
        }
    }
}

/// `modelgate test`: the failures, then the count; success only when something passed and
/// nothing failed.
fn policy_test(files: Vec<std::path::PathBuf>, config: Option<&std::path::Path>) -> ExitCode {
    let files = if files.is_empty() {
        vec!["policies/tests".into()]
    } else {
        files
    };
    let report = modelgate::cli::test(&files, config);
    if !report.text.is_empty() {
        out(report.text.trim_end());
    }
    out(&format!(
        "{} passed, {} failed",
        report.passed, report.failed
    ));
    if report.failed == 0 && report.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `modelgate diff`: exit 0 when nothing moves, 1 when something does (as diff(1)), 2 when
/// the inputs are wrong.
fn diff(
    configs: &[std::path::PathBuf],
    policy_files: &[std::path::PathBuf],
    json: bool,
) -> ExitCode {
    match modelgate::cli::diff(configs, policy_files, json) {
        Ok(report) => {
            out(report.text.trim_end());
            if report.changed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            err(&format!("modelgate: {e}"));
            ExitCode::from(2)
        }
    }
}

#[expect(clippy::print_stdout, reason = "command output")]
fn out(s: &str) {
    println!("{s}");
}

#[expect(clippy::print_stderr, reason = "command errors")]
fn err(s: &str) {
    // After the log lines that led to it.
    telemetry::flush();
    eprintln!("{s}");
}

fn fail(s: &str) -> ExitCode {
    err(&format!("modelgate: {s}"));
    ExitCode::FAILURE
}
