//! The systems under test, each its own process pinned to one core when `taskset` is there: the
//! gateway binary, and the floor (this benchmark binary started again as a bare forwarder).
//! Their CPU time, resident memory and open files are read from /proc.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proxy {
    child: Child,
    pub base: String,
    pub started_in: Duration,
    /// The gateway's configuration directory, removed when it is stopped.
    dir: Option<PathBuf>,
}

/// Numbers the gateways' directories within this process.
static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether processes can be pinned to cores here: `taskset` is there and this process may run
/// on two cores or more (the pins name cores 0 and 1; a one-core builder training a PGO build
/// runs everything unpinned).
pub fn pinning() -> bool {
    static PINNING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PINNING.get_or_init(|| {
        std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
            && Command::new("taskset")
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// Pins this process (and the threads it starts later) to `cpus`, when it can.
pub fn pin_self(cpus: &str) {
    if pinning() {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// `program args…`, under `taskset -c cpus` when it can.
fn pinned(program: &str, cpus: &str) -> Command {
    if pinning() {
        let mut c = Command::new("taskset");
        c.args(["-c", cpus, program]);
        c
    } else {
        Command::new(program)
    }
}

/// Waits for the first line of `out` that contains `marker`, reading (and dropping) the rest
/// so the pipe never fills.
fn wait_for_line(out: impl std::io::Read + Send + 'static, marker: &'static str) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // The proxy's warnings and errors go to the run's output (the first 20): an error
        // counted by the load says what it was there.
        let mut told = 0;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent && line.contains(marker) {
                let _ = tx.send(line.clone());
                sent = true;
            } else if told < 20 && (line.contains(" WARN ") || line.contains(" ERROR ")) {
                println!("proxy: {line}");
                told += 1;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the system under test did not start")
}

impl Proxy {
    /// The bare forwarder to `upstream`.
    pub fn floor(upstream: std::net::SocketAddr, cpus: &str) -> Proxy {
        let exe = std::env::current_exe().unwrap();
        let started = Instant::now();
        let mut child = pinned(exe.to_str().unwrap(), cpus)
            .args(["--floor", &upstream.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let line = wait_for_line(child.stdout.take().unwrap(), "floor listening");
        let started_in = started.elapsed();
        let addr = line.rsplit(' ').next().unwrap().to_owned();
        Proxy {
            child,
            base: format!("http://{addr}"),
            started_in,
            dir: None,
        }
    }

    /// The gateway with the configuration `yaml`.
    pub fn gateway(yaml: &str, cpus: &str) -> Proxy {
        let dir: PathBuf = std::env::temp_dir().join(format!(
            "modelgate-bench-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("modelgate.yaml");
        std::fs::write(&config, yaml).unwrap();
        let started = Instant::now();
        // Another build of the gateway when asked: `cargo build --release`'s, what users run and
        // what the profile in deploy/pgo/ fits (`cargo bench` builds its dependencies with the
        // dev-dependencies' features, tokio's test-util among them, under other names), or
        // `deploy/pgo.sh`'s. Else this one's.
        let bin = std::env::var("MODELGATE_BENCH_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_modelgate").to_owned());
        let wrap = std::env::var("MODELGATE_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(first) => {
                let mut c = pinned(first, cpus);
                c.args(words).arg(&bin);
                c
            }
            None => pinned(&bin, cpus),
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,modelgate=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The rest of its output (one line per request) is read and dropped.
        let line = wait_for_line(child.stderr.take().unwrap(), "modelgate is serving");
        let started_in = started.elapsed();
        let api = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .unwrap()
            .to_owned();
        Proxy {
            child,
            base: format!("http://{api}"),
            started_in,
            dir: Some(dir),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    /// SIGTERM first, so a profiler wrapped around the gateway writes its report.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut stopped = false;
        while !stopped && Instant::now() < deadline {
            stopped = matches!(self.child.try_wait(), Ok(Some(_)));
            if !stopped {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
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

/// CPU time of `pid`, every thread of it, in nanoseconds (the scheduler's own accounting,
/// finer than the 10 ms ticks of `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> Duration {
    schedstat(pid, 0)
}

/// Time the threads of `pid` spent ready to run but waiting for their core (the scheduler's
/// run delay: behind another process, or behind one another).
pub fn run_delay(pid: u32) -> Duration {
    schedstat(pid, 1)
}

/// Field `i` of every thread's `schedstat` (time on the core, time waiting for it), summed.
fn schedstat(pid: u32, i: usize) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Time the hypervisor took core `core` from this machine so far (`steal` in `/proc/stat`, in
/// clock ticks of 10 ms): a core taken away stalls whatever runs on it, and no process here
/// sees it as its own CPU time.
pub fn steal_ticks(core: usize) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{core}");
    stat.lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .and_then(|l| l.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0)
}

/// Context switches of `pid`, every thread of it: voluntary ones (the thread slept, mostly to
/// wait for the next event: its wake-ups) and involuntary ones (it was preempted).
pub fn switches(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let field = |status: &str, name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .fold((0, 0), |(v, i), s| {
            (
                v + field(&s, "voluntary_ctxt_switches:"),
                i + field(&s, "nonvoluntary_ctxt_switches:"),
            )
        })
}

/// Minor page faults of `pid`, and its time in user and in system mode in clock ticks (10 ms),
/// every thread of it.
pub fn faults_and_modes(pid: u32) -> [u64; 3] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis, from the 3rd: minflt is the 10th,
    // utime the 14th and stime the 15th.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    [7, 11, 12].map(|i| fields.get(i).copied().unwrap_or(0))
}

/// TCP connections opened on this machine so far, by any process (`ActiveOpens`).
pub fn tcp_opens() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
