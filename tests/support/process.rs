//! The gateway binary as a child process: started with a configuration file, its stderr
//! collected, its addresses read from the line it logs when it serves.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CANARY_KEY, temp_dir};

/// The gateway binary, started with a configuration file, its stderr collected.
pub struct Process {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub base: String,
    pub admin: String,
    pub config: PathBuf,
    _dir: super::TempDir,
}

impl Process {
    pub fn start(yaml: &str) -> Process {
        Process::start_with(yaml, &[])
    }

    /// [`Process::start`] with more environment variables (`RUST_LOG`, keys).
    pub fn start_with(yaml: &str, env: &[(&str, &str)]) -> Process {
        let dir = temp_dir();
        let config = dir.join("modelgate.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_modelgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("CANARY", CANARY_KEY)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let (base, admin) = loop {
            let text = log.lock().unwrap().clone();
            if let Some(line) = text.lines().find(|l| l.contains("modelgate is serving")) {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .unwrap()
                        .to_owned()
                };
                break (
                    format!("http://{}", field("api=")),
                    format!("http://{}", field("admin=")),
                );
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Process {
            child,
            log,
            base,
            admin,
            config,
            _dir: dir,
        }
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        super::client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}
