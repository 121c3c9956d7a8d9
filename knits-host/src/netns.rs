//! Network namespaces and the guard that removes them.
//!
//! Every namespace and link a run creates carries the run's prefix (`<prefix>-client`,
//! `<prefix>-n1`, ...). A [`Guard`] records what it created and the processes it started; its
//! `Drop` kills the processes and deletes the namespaces, also when a test panics. A run that was
//! killed outright leaves namespaces behind; [`cleanup_prefix`] (`knits-host cluster down`) removes
//! everything that carries a prefix.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest run prefix: `<prefix>-client` must fit in an interface name (15 bytes).
pub const MAX_PREFIX: usize = 8;

/// Checks a run prefix: 1..=8 characters, lower-case letters and digits, starting with a letter.
pub fn check_prefix(p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && p.len() <= MAX_PREFIX
        && p.as_bytes()[0].is_ascii_lowercase()
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "prefix {p:?} must be 1..={MAX_PREFIX} lower-case letters or digits starting with a letter \
             (it goes into interface names, which Linux limits to 15 bytes)"
        ))
    }
}

/// A prefix nobody else is using now: `stem` plus hex digits from the pid, the clock and a
/// process-wide counter (so tests in one process differ).
pub fn unique_prefix(stem: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    use rand_xoshiro::rand_core::{Rng, SeedableRng};
    let seed = (std::process::id() as u64) << 32
        ^ t as u64
        ^ (N.fetch_add(1, Ordering::Relaxed) as u64) << 20;
    let x = rand_xoshiro::SplitMix64::seed_from_u64(seed).next_u64();
    let stem: String = stem.chars().take(MAX_PREFIX - 5).collect();
    let digits = MAX_PREFIX - stem.len();
    format!(
        "{stem}{:0width$x}",
        x & ((1u64 << (4 * digits)) - 1),
        width = digits
    )
}

/// Runs `ip` with `args`; the error names the command and carries its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running `ip`: {e} (install iproute2)")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Runs several `ip` commands (one a line) in namespace `ns` (`None`: the caller's).
pub fn ip_batch(ns: Option<&str>, commands: &str) -> io::Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running `ip`: {e} (install iproute2)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(commands.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip -batch` in {} failed: {}\ncommands:\n{commands}",
            ns.unwrap_or("the current namespace"),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Names of the existing network namespaces.
pub fn list_namespaces() -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    match std::fs::read_dir("/run/netns") {
        Ok(rd) => {
            for e in rd.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    v.push(n.to_string());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    v.sort();
    Ok(v)
}

/// Moves the calling thread into namespace `name` (setns(2)); sockets it creates afterwards live
/// there. Only this thread moves.
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .map_err(|e| io::Error::new(e.kind(), format!("open namespace {name}: {e}")))?;
    // SAFETY: setns on a namespace fd we own; affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns into {name}: {e}")));
    }
    Ok(())
}

/// `program args` inside namespace `ns` (via `ip netns exec`), standard input closed; the child
/// dies with this process (PR_SET_PDEATHSIG), even if nothing else stops it.
pub fn command_in(ns: &str, program: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe; called between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    cmd
}

/// True when the process may create TAPs and namespaces (effective CAP_NET_ADMIN).
pub fn have_net_admin() -> bool {
    // CapEff in /proc/self/status; CAP_NET_ADMIN is bit 12.
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

fn kill_pid(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we read; errors (gone already) are ignored.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Kills every process in namespace `ns` (as `ip netns pids` lists them).
fn kill_namespace_pids(ns: &str) {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>()
            && pid > 1
            && pid != std::process::id() as i32
        {
            kill_pid(pid, libc::SIGKILL);
        }
    }
}

/// Removes every namespace and link named `<prefix>-*` and kills the processes inside. Returns
/// the names removed.
pub fn cleanup_prefix(prefix: &str) -> io::Result<Vec<String>> {
    check_prefix(prefix).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut removed = Vec::new();
    let stem = format!("{prefix}-");
    for ns in list_namespaces()? {
        if ns.starts_with(&stem) {
            kill_namespace_pids(&ns);
            ip(&["netns", "del", &ns])?;
            removed.push(ns);
        }
    }
    // Links left in this namespace (persistent TAPs or veths of an older run).
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_str()
                && n.starts_with(&stem)
            {
                ip(&["link", "del", n])?;
                removed.push(n.to_string());
            }
        }
    }
    Ok(removed)
}

/// What a run created: namespaces and child processes. Dropping it kills the processes (TERM,
/// then KILL after a grace period) and deletes the namespaces.
#[derive(Debug, Default)]
pub struct Guard {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Guard {
    /// A guard for names carrying `prefix`.
    pub fn new(prefix: &str) -> Result<Guard, String> {
        check_prefix(prefix)?;
        Ok(Guard {
            prefix: prefix.to_string(),
            namespaces: Vec::new(),
            children: Vec::new(),
        })
    }

    /// The run prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// Creates namespace `<prefix>-<suffix>` with its loopback up; returns its name.
    pub fn add_namespace(&mut self, suffix: &str) -> io::Result<String> {
        let name = self.name(suffix);
        crate::tap::check_ifname(&name)?;
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        // No IPv6 on the cluster's links: the switch forwards IPv4 only, and router
        // solicitations would only show up as drops. Set before any link moves in.
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "disabling IPv6 in {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(name)
    }

    /// Opens TAP `ifname` here (the switch side keeps the fd), moves its link into namespace `ns`
    /// and gives it `addr` (CIDR), brings it up and, when given, a default route via `gateway`.
    pub fn attach_tap(
        &mut self,
        ns: &str,
        ifname: &str,
        addr: &str,
        gateway: Option<&str>,
        opts: crate::tap::TapOptions,
    ) -> io::Result<crate::tap::Tap> {
        let tap = crate::tap::Tap::open(ifname, opts)?;
        ip(&["link", "set", "dev", ifname, "netns", ns])?;
        let mut cmds = format!("addr add {addr} dev {ifname}\nlink set dev {ifname} up\n");
        if let Some(gw) = gateway {
            cmds.push_str(&format!("route add default via {gw} dev {ifname}\n"));
        }
        ip_batch(Some(ns), &cmds)?;
        Ok(tap)
    }

    /// Starts `program args` inside namespace `ns` (see [`command_in`]); the child is killed
    /// when the guard drops. Its output goes to `log` when given, else is discarded.
    pub fn spawn_in(
        &mut self,
        ns: &str,
        label: &str,
        program: &str,
        args: &[String],
        log: Option<File>,
    ) -> io::Result<u32> {
        let mut cmd = command_in(ns, program, args);
        match log {
            Some(f) => {
                let f2 = f.try_clone()?;
                cmd.stdout(f).stderr(f2);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {label} in {ns}: {e}")))?;
        let pid = child.id();
        self.children.push((label.to_string(), child));
        Ok(pid)
    }

    /// Children that have exited, with their status (a child that dies early is a setup error).
    pub fn exited_children(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut v = Vec::new();
        for (label, c) in &mut self.children {
            if let Ok(Some(st)) = c.try_wait() {
                v.push((label.clone(), st));
            }
        }
        v
    }

    /// Kills the children and deletes the namespaces now (also done on drop).
    pub fn teardown(&mut self) {
        for (_, c) in &self.children {
            kill_pid(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_millis(1500);
        for (_, c) in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        self.children.clear();
        for ns in self.namespaces.drain(..).rev() {
            kill_namespace_pids(&ns);
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("knits-host: could not remove namespace {ns}: {e}");
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("kn").is_ok());
        assert!(check_prefix("t1a2b3c4").is_ok());
        assert!(check_prefix("t1a2b3c4d").is_err());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("1abc").is_err());
        assert!(check_prefix("Ab").is_err());
        assert!(check_prefix("a-b").is_err());
    }

    #[test]
    fn unique_prefixes_are_valid_and_differ() {
        let a = unique_prefix("t");
        let b = unique_prefix("t");
        assert!(check_prefix(&a).is_ok(), "{a}");
        assert_ne!(a, b);
        assert!(check_prefix(&unique_prefix("averylongstem")).is_ok());
        assert!(crate::tap::check_ifname(&format!("{a}-client")).is_ok());
    }
}
