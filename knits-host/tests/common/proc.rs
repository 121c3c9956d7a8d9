//! The switch as a process of its own (`knits-host cluster up --config FILE`), so that its memory
//! can be read from /proc without the test's own allocations in it. Counters come from its stats
//! socket (Prometheus text). Dropping the handle stops it (SIGTERM, then SIGKILL) and removes
//! whatever carries the run prefix.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `knits-host cluster up`.
pub struct SwitchProcess {
    child: Child,
    /// Run prefix.
    pub prefix: String,
    dir: PathBuf,
}

impl SwitchProcess {
    /// Starts a cluster from `toml` (it must set `prefix`), waits for "ready".
    pub fn start(exe: &str, prefix: &str, toml: &str) -> SwitchProcess {
        let dir = std::env::temp_dir().join(format!("knits-proc-{prefix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg = dir.join("cluster.toml");
        std::fs::write(&cfg, toml).expect("write config");
        let mut cmd = Command::new(exe);
        cmd.args(["cluster", "up", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; between fork and exec. The switch tears its
        // cluster down on SIGTERM, also when this test process dies.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGTERM as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start knits-host cluster up");
        let out = child.stdout.take().expect("stdout");
        let mut p = SwitchProcess {
            child,
            prefix: prefix.to_string(),
            dir,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(l) = line else { break };
                if l.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(40)).is_err() {
            let st = p.child.try_wait();
            p.stop();
            panic!("knits-host cluster up did not become ready ({st:?})");
        }
        p
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// The counters, `name{labels}` -> value.
    pub fn metrics(&self) -> Metrics {
        let text = knits_host::stats::query(&knits_host::stats::socket_path(&self.prefix), true)
            .expect("stats socket");
        let mut m = HashMap::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = l.rsplit_once(' ')
                && let Ok(v) = v.parse::<f64>()
            {
                m.insert(k.to_string(), v as u64);
            }
        }
        Metrics(m)
    }

    /// The human-readable counters table.
    pub fn table(&self) -> String {
        knits_host::stats::query(&knits_host::stats::socket_path(&self.prefix), false)
            .unwrap_or_else(|e| e.to_string())
    }

    /// Stops the process and removes everything of the run.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = knits_host::netns::cleanup_prefix(&self.prefix);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prometheus samples by `name{labels}`.
#[derive(Debug, Clone)]
pub struct Metrics(pub HashMap<String, u64>);

impl Metrics {
    /// A sample, 0 when absent.
    pub fn get(&self, key: &str) -> u64 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// `knits_drops_total{reason="<r>"}`.
    pub fn drops(&self, reason: &str) -> u64 {
        self.get(&format!("knits_drops_total{{reason=\"{reason}\"}}"))
    }

    /// The sum over every sample whose key starts with `prefix`.
    pub fn sum(&self, prefix: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// CPU time (user + system) of process `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let g = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    g(11) + g(12)
}
