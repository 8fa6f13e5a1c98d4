//! The system under test: the gateway binary, started as its own process (pinned to one core
//! when `taskset` is there), with its CPU time, resident memory and open files read from /proc.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Gateway {
    child: Child,
    pub base: String,
    pub started_in: Duration,
}

fn taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins this process (and the threads it starts later) to `cpus`, when it can.
pub fn pin_self(cpus: &str) {
    if taskset() {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

impl Gateway {
    pub fn start(yaml: &str, cpus: &str) -> Gateway {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("modelgate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("modelgate.yaml");
        std::fs::write(&config, yaml).unwrap();
        let bin = env!("CARGO_BIN_EXE_modelgate");
        let mut cmd = if taskset() {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus, bin]);
            c
        } else {
            Command::new(bin)
        };
        let started = Instant::now();
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,modelgate=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("modelgate is serving") {
                    let _ = tx.send(line.clone());
                    sent = true;
                }
                // The rest (one line per request) is read and dropped so the pipe never fills.
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway did not start");
        let started_in = started.elapsed();
        let api = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .unwrap()
            .to_owned();
        Gateway {
            child,
            base: format!("http://{api}"),
            started_in,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of `pid`.
pub fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces), then utime and stime.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
