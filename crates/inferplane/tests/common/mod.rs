//! Shared helpers of the binary's tests: the real `inferplane` processes, started on
//! 127.0.0.1 with ports from the OS and killed on every path.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset; a failed unwrap fails the test

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to print that it is up.
const STARTUP: Duration = Duration::from_secs(30);

/// A child process, killed on drop, so a failed assertion never leaves a server running.
pub struct Running(Child);

impl Running {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends it a signal (`TERM`, `INT`, ...) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `limit` for it to exit; its status, or `None` if it still runs.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `inferplane ARGS` and returns it with what `pick` found in the first `n` lines of
/// its standard output that it picks something from (bounded by [`STARTUP`]). The rest of
/// the output is read and dropped by a thread for the life of the process: the gateway
/// logs to standard output, and a pipe nobody reads would block it once full, or break
/// its writes once closed.
pub fn start(
    args: &[&str],
    n: usize,
    pick: impl Fn(&str) -> Option<String>,
) -> (Running, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferplane"))
        .args(args)
        .env_remove("INFERPLANE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line); // once the test has what it wants, nobody listens
        }
    });
    let until = Instant::now() + STARTUP;
    let mut found = Vec::new();
    while found.len() < n {
        let left = until.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("inferplane {args:?} said {found:?}, then: {e}"));
        found.extend(pick(&line));
    }
    (running, found)
}

/// Starts `inferplane sim ARGS` and returns it with the URLs of its `instances`.
pub fn sim(args: &[&str], instances: usize) -> (Running, Vec<String>) {
    let args: Vec<&str> = ["sim"].iter().chain(args).copied().collect();
    start(&args, instances, |line| {
        let url = line.rsplit(' ').next()?;
        (line.starts_with("sim-") && url.starts_with("http://127.0.0.1:")).then(|| url.to_string())
    })
}

/// Starts `inferplane serve --config CONFIG` and returns it with its URL.
pub fn gateway(config: &Path) -> (Running, String) {
    let (running, mut urls) = start(
        &["serve", "--config", config.to_str().unwrap()],
        1,
        |line| {
            line.strip_prefix("inferplane gateway listening on ")
                .map(str::to_string)
        },
    );
    (running, urls.pop().unwrap())
}
