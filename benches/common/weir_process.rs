#![allow(dead_code)]
//! `weir run` as a child process, for the benchmarks that measure a whole node (its own
//! RSS, its own webhook): started, waited for until it logs that it runs, its RSS read
//! from /proc, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_weir");

pub struct WeirProcess {
    child: Option<Child>,
    /// The log lines so far (stderr), for the address of a listener or a failure.
    log: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl WeirProcess {
    /// `weir run -t topology ARGS` with `env`; returns once it logged "weir is running"
    /// and, when `wait_for_ingress`, "ingress listening" too.
    pub fn start(name: &str, topology: &Path, args: &[&str], env: &[(&str, &str)], wait_for_ingress: bool) -> WeirProcess {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-t").arg(topology).args(args);
        cmd.env("WEIR_LOG", "info,librdkafka=warn").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("weir run starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Kept before it is announced: whoever hears of it finds it in the log.
                if let Ok(mut l) = kept.lock() {
                    // Keep the start and the latest lines; a long run logs little at info.
                    if l.len() > 5000 {
                        l.drain(1000..2000);
                    }
                    l.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let mut p = WeirProcess { child: Some(child), log, name: name.to_string() };
        let (mut running, mut ingress) = (false, !wait_for_ingress);
        let started = Instant::now();
        while !running || !ingress {
            let Some(left) = Duration::from_secs(90).checked_sub(started.elapsed()) else { break };
            match rx.recv_timeout(left) {
                Ok(line) => {
                    running |= line.contains("weir is running");
                    ingress |= line.contains("ingress listening");
                }
                Err(_) => break,
            }
        }
        if !running || !ingress {
            let log = p.log_text();
            p.kill();
            panic!("weir ({name}) did not start within 90 s:\n{log}");
        }
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The first `addr=` a log line containing `what` names.
    pub fn logged_addr(&self, what: &str) -> Option<String> {
        let log = self.log.lock().ok()?;
        log.iter()
            .filter(|l| l.contains(what))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")).map(str::to_string))
    }

    /// Resident set size in KiB (VmRSS of /proc/PID/status).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// SIGTERM and wait (bounded) for the exit; SIGKILL past `within`.
    pub fn stop(&mut self, within: Duration) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("weir ({}) did not exit within {within:?} of SIGTERM: killed", self.name);
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The 1-minute load average, to print next to a number (the machine is shared).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The `p` quantile (0..=1) of sorted values.
pub fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
