//! CPU time from /proc: per process or thread (utime + stime) and the kernel's softirq time.
//!
//! Who is who: the switch runs as threads of this process (`knits-switch`, `knits-shard<k>`);
//! HAProxy, nginx and the knits-proxy (this executable's `exec-proxy`, comm `knits-bench`) are
//! processes in the topology's namespaces, found with `ip netns pids`. Softirq time is the
//! whole machine's (the `softirq` column of /proc/stat), so other work on a shared machine
//! adds to it.

use std::process::Command;

/// Clock ticks per second of /proc's figures.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (comm, utime + stime in ticks) from a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat`
/// line. The name may hold spaces and parentheses: it ends at the last `)`.
pub fn parse_pid_stat(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The softirq ticks of the `cpu` line of /proc/stat (all CPUs).
pub fn parse_softirq(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(7)?.parse().ok()
}

/// CPU ticks at one moment, by role.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// The switch's threads in this process.
    pub switch: u64,
    /// HAProxy processes.
    pub haproxy: u64,
    /// knits-proxy processes (comm `knits-bench` or `knits-host` in the namespaces).
    pub proxy: u64,
    /// nginx processes.
    pub nginx: u64,
    /// Machine-wide softirq.
    pub softirq: u64,
}

/// CPU seconds spent between two samples, by role.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// The switch.
    pub switch: f64,
    /// HAProxy.
    pub haproxy: f64,
    /// knits-proxy.
    pub proxy: f64,
    /// nginx.
    pub nginx: f64,
    /// Softirq (machine-wide).
    pub softirq: f64,
}

impl Sample {
    /// Seconds from `self` to `later`.
    pub fn until(&self, later: &Sample) -> Spent {
        let hz = ticks_per_second();
        let d = |a: u64, b: u64| b.saturating_sub(a) as f64 / hz;
        Spent {
            switch: d(self.switch, later.switch),
            haproxy: d(self.haproxy, later.haproxy),
            proxy: d(self.proxy, later.proxy),
            nginx: d(self.nginx, later.nginx),
            softirq: d(self.softirq, later.softirq),
        }
    }
}

fn read_stat(path: &str) -> Option<(String, u64)> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| parse_pid_stat(&s))
}

/// Processes living in namespace `ns`.
pub fn namespace_pids(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Samples the roles over this process's threads and the processes of `namespaces`.
pub fn sample(namespaces: &[String]) -> Sample {
    let mut s = Sample::default();
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            let p = e.path().join("stat");
            if let Some((comm, t)) = read_stat(&p.to_string_lossy())
                && (comm.starts_with("knits-switch") || comm.starts_with("knits-shard"))
            {
                s.switch += t;
            }
        }
    }
    let me = std::process::id();
    for ns in namespaces {
        for pid in namespace_pids(ns) {
            if pid == me {
                continue;
            }
            // Whole process: /proc/<pid>/stat sums its threads.
            if let Some((comm, t)) = read_stat(&format!("/proc/{pid}/stat")) {
                match comm.as_str() {
                    "haproxy" => s.haproxy += t,
                    "nginx" => s.nginx += t,
                    // comm is the executable's name cut to 15 bytes (a renamed copy too).
                    c if c.starts_with("knits-bench") || c.starts_with("knits-host") => {
                        s.proxy += t
                    }
                    _ => {}
                }
            }
        }
    }
    s.softirq = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_softirq(&t))
        .unwrap_or(0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_with_odd_names() {
        let line = "4242 (knits (x) y) S 1 4242 4242 0 -1 4194560 300 0 0 0 117 23 0 0 20 0 3 0 \
                    100 1000 10 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_pid_stat(line), Some(("knits (x) y".into(), 140)));
        assert_eq!(parse_pid_stat("12 (a) S 1"), None);
        assert_eq!(parse_pid_stat("garbage"), None);
    }

    #[test]
    fn softirq_column() {
        let s = "cpu  10 20 30 40 50 60 70 80 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n";
        assert_eq!(parse_softirq(s), Some(70));
        assert_eq!(parse_softirq("intr 1\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let line = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_pid_stat(&line).is_some());
        let a = Sample {
            switch: 10,
            softirq: 5,
            ..Default::default()
        };
        let b = Sample {
            switch: 10 + ticks_per_second() as u64,
            softirq: 4,
            ..Default::default()
        };
        let d = a.until(&b);
        assert_eq!((d.switch, d.softirq), (1.0, 0.0));
    }
}
