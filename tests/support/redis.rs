//! A real `redis-server` for the tests that share state between gateways (Debian's package;
//! `.ci/run` installs it and sets `MODELGATE_REQUIRE_REDIS=1`; without it those tests say so and
//! skip).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own on a free loopback port, without persistence.
pub struct Redis {
    binary: PathBuf,
    pub port: u16,
    pub child: Option<Child>,
}

impl Redis {
    #[expect(clippy::print_stderr, reason = "a skipped test says why")]
    pub fn find() -> Option<PathBuf> {
        let found = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("redis-server"))
                .find(|p| p.is_file())
        });
        if found.is_none() {
            assert!(
                std::env::var("MODELGATE_REQUIRE_REDIS").is_err(),
                "redis-server is required (MODELGATE_REQUIRE_REDIS is set) but not on PATH"
            );
            eprintln!("skipped: redis-server is not installed (Debian package `redis-server`)");
        }
        found
    }

    pub fn start(binary: PathBuf) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            binary,
            port,
            child: None,
        };
        r.up();
        r
    }

    pub fn up(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}
