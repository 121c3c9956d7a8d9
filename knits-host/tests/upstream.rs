//! A real web server behind the proxies: `cluster up` with `upstream = 127.0.0.1:8081`, Debian's
//! nginx on that address in every node namespace, and curl in the client namespace fetching
//! through the VIP. The proxies' prefix policy puts `/obj/nK/...` on node K, so requests that land
//! elsewhere are handed off through the switch. Every body is compared byte for byte with its
//! file, every response must come from its owner (each nginx adds `x-served-by: nK`), and the
//! switch's counters must show the hand-offs and no failed connection. Needs root and
//! /usr/sbin/nginx (`apt-get install nginx-light`); prints a visible skip without either (and
//! fails when KNITS_REQUIRE_ROOT=1, as CI sets it).

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use knits_core::counters::Generated;
use knits_host::cluster::ClusterConfig;
use knits_host::netns;
use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

use common::wait_table_empty;

const NGINX: &str = "/usr/sbin/nginx";
const UPSTREAM: &str = "127.0.0.1:8081";
const NODES: usize = 3;
/// File names and sizes, the same under /obj/n1/, /obj/n2/ and /obj/n3/.
const FILES: [(&str, usize); 6] = [
    ("empty", 0),
    ("one", 1),
    ("k1", 1000),
    ("k64", 64 << 10),
    ("m1", 1 << 20),
    ("m16", 16 << 20),
];

/// Deterministic, non-trivial bytes for `path` (SplitMix64 seeded by the path's FNV-1a hash):
/// every file differs from the others, also files of one size under different owners.
fn content(path: &str, len: usize) -> Vec<u8> {
    let seed = path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut out = vec![0; len];
    SplitMix64::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// The test's files and nginx configurations; removed on drop unless the test failed.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "upstream test: files and nginx logs kept in {}",
                self.0.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// nginx in the foreground in one node namespace, in a process group of its own; dropping it
/// stops master and worker (TERM, then KILL), also when the test panics.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Writes `dir/nginx.conf` (listen on [`UPSTREAM`], root `dir/www`, `x-served-by: <node>`)
    /// and starts nginx with it inside `ns`.
    fn start(ns: &str, dir: &Path, node: &str) -> Nginx {
        for sub in ["tmp", "www"] {
            std::fs::create_dir_all(dir.join(sub)).expect("nginx directories");
        }
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\n\
             user root root;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log {d}/access.log;\n\
             \x20   client_body_temp_path {d}/tmp/body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   sendfile on;\n\
             \x20   keepalive_timeout 60s;\n\
             \x20   keepalive_requests 1000;\n\
             \x20   server {{\n\
             \x20       listen {UPSTREAM};\n\
             \x20       root {d}/www;\n\
             \x20       add_header x-served-by {node} always;\n\
             \x20   }}\n\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let log = std::fs::File::create(dir.join("nginx.out")).expect("nginx output file");
        // nginx dies with this test process even if Drop never runs (command_in's PDEATHSIG).
        let conf = conf_path.as_os_str();
        let child = netns::command_in(
            ns,
            NGINX,
            &["-c".as_ref(), conf, "-g".as_ref(), "daemon off;".as_ref()],
        )
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting nginx in {ns}: {e}"));
        Nginx {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Panics with nginx's own words when it has exited.
    fn check_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            let out = std::fs::read_to_string(self.dir.join("nginx.out")).unwrap_or_default();
            let err = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            panic!("nginx ({}) exited: {st}\n{out}\n{err}", self.dir.display());
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling the process group of our own child (master and worker).
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // SAFETY: as above; a worker left behind by a master that did not stop goes too.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One transfer as curl reports it with [`WRITE_OUT`].
#[derive(Debug)]
struct Transfer {
    served_by: String,
    status: u16,
    connects: u32,
    bytes: u64,
}

const WRITE_OUT: &str = "%header{x-served-by} %{http_code} %{num_connects} %{size_download}\\n";

/// Runs one curl in namespace `ns` fetching every `(url, output)` in order (on one connection
/// when the server keeps it open); `extra` are further curl arguments. Panics when curl fails.
fn curl(ns: &str, extra: &[&str], fetches: &[(String, PathBuf)]) -> Vec<Transfer> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns,
        "curl",
        "-sS",
        "--fail",
        "--noproxy",
        "*",
    ])
    .args(["--max-time", "30", "-w", WRITE_OUT])
    .args(extra);
    for (url, out) in fetches {
        cmd.arg("-o").arg(out).arg(url);
    }
    let t = Instant::now();
    let out = cmd.output().expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl {extra:?} {:?} failed after {:.1} s ({}): {}\n{stdout}",
        fetches.iter().map(|f| &f.0).collect::<Vec<_>>(),
        t.elapsed().as_secs_f64(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Transfer> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "curl wrote {l:?}");
            Transfer {
                served_by: f[0].to_string(),
                status: f[1].parse().expect("status"),
                connects: f[2].parse().expect("num_connects"),
                bytes: f[3].parse().expect("size_download"),
            }
        })
        .collect();
    assert_eq!(v.len(), fetches.len(), "curl wrote {stdout}");
    v
}

/// One request of the test: the object and its owner.
#[derive(Clone)]
struct Object {
    owner: usize,
    name: &'static str,
    len: usize,
}

impl Object {
    fn path(&self) -> String {
        format!("/obj/n{}/{}", self.owner, self.name)
    }
}

/// Checks the transfers of `objs` (written to `outs`): status, owner, length, every byte.
fn verify(objs: &[Object], outs: &[PathBuf], got: &[Transfer], files: &Path) -> Result<(), String> {
    if got.len() != objs.len() {
        return Err(format!(
            "{} transfers for {} objects",
            got.len(),
            objs.len()
        ));
    }
    for ((o, out), t) in objs.iter().zip(outs).zip(got) {
        let p = o.path();
        if t.status != 200 || t.bytes != o.len as u64 {
            return Err(format!("{p}: {t:?}, expected 200 and {} bytes", o.len));
        }
        if t.served_by != format!("n{}", o.owner) {
            return Err(format!(
                "{p} was not served by its owner n{}: {t:?}",
                o.owner
            ));
        }
        same_bytes(out, &files.join(file_name(o))).map_err(|e| format!("{p}: {e}"))?;
    }
    Ok(())
}

/// The name of `o`'s file in the test's file directory.
fn file_name(o: &Object) -> String {
    format!("n{}-{}", o.owner, o.name)
}

/// Compares what curl wrote to `out` with the file `want`, byte for byte; removes `out`.
fn same_bytes(out: &Path, want: &Path) -> Result<(), String> {
    let want = std::fs::read(want).map_err(|e| format!("{}: {e}", want.display()))?;
    // curl does not create the file for an empty body.
    let body = match std::fs::read(out) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && want.is_empty() => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", out.display())),
    };
    if body.len() != want.len() {
        return Err(format!("{} bytes, the file has {}", body.len(), want.len()));
    }
    if let Some(i) = body.iter().zip(&want).position(|(a, b)| a != b) {
        return Err(format!(
            "byte {i} is {:#04x}, the file has {:#04x}",
            body[i], want[i]
        ));
    }
    let _ = std::fs::remove_file(out);
    Ok(())
}

/// The objects `[n1 a, n1 b, n1 c, n2 a, ...]`: the owner changes every three requests, so of
/// three consecutive fresh connections (sprayed round robin over three nodes, one to each) exactly
/// two land on another node than the owner.
fn by_owner_in_threes() -> Vec<Object> {
    let mut v = Vec::new();
    for chunk in FILES.chunks(3) {
        for owner in 1..=NODES {
            for &(name, len) in chunk {
                v.push(Object { owner, name, len });
            }
        }
    }
    v
}

/// 0 B .. 16 MiB from nginx on every node through the switch: fresh connections one after
/// another, one keep-alive connection moving between the three owners, and `Connection: close`.
#[test]
fn nginx_upstream_through_handoffs() {
    if !common::root_or_skip("nginx_upstream_through_handoffs") {
        return;
    }
    if !Path::new(NGINX).exists() {
        let msg = format!("{NGINX} is missing: install it with `apt-get install nginx-light`");
        if std::env::var("KNITS_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("nginx_upstream_through_handoffs: {msg} (.ci/run does)");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {msg}: nginx_upstream_through_handoffs"
        );
        return;
    }
    let t0 = Instant::now();
    let cfg = ClusterConfig {
        nodes: NODES,
        upstream: Some(UPSTREAM.parse::<SocketAddr>().unwrap()),
        ..common::config("tup")
    };
    let prefix = cfg.prefix.clone().unwrap();
    let tmp = TempDir(std::env::temp_dir().join(format!("knits-upstream-{prefix}")));
    let files = tmp.0.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for owner in 1..=NODES {
        for (name, len) in FILES {
            let o = Object { owner, name, len };
            std::fs::write(files.join(file_name(&o)), content(&o.path(), len)).unwrap();
        }
    }

    // Readiness needs only the proxies: the web servers start after it.
    let mut c = common::up(cfg);
    let after_probe = c.snapshot();

    // Every node's root holds the same tree: /obj/n1/, /obj/n2/, /obj/n3/ (hard links).
    let mut servers = Vec::new();
    for n in 1..=NODES {
        let dir = tmp.0.join(format!("n{n}"));
        for owner in 1..=NODES {
            let d = dir.join(format!("www/obj/n{owner}"));
            std::fs::create_dir_all(&d).unwrap();
            for (name, len) in FILES {
                let o = Object { owner, name, len };
                std::fs::hard_link(files.join(file_name(&o)), d.join(name)).unwrap();
            }
        }
        servers.push(Nginx::start(&c.node_ns[n - 1], &dir, &format!("n{n}")));
    }
    // Each nginx answers in its own namespace before any traffic goes through the switch.
    let out = tmp.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (n, s) in servers.iter_mut().enumerate() {
        let ns = &c.node_ns[n];
        let url = format!("http://{UPSTREAM}/obj/n3/k64");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            s.check_alive();
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "curl",
                    "-s",
                    "--fail",
                    "--noproxy",
                    "*",
                ])
                .args(["-o", "/dev/null", &url])
                .status()
                .is_ok_and(|st| st.success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "nginx in {ns} does not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        let direct = out.join("direct");
        let got = curl(ns, &[], &[(url, direct.clone())]);
        assert_eq!(got[0].served_by, format!("n{}", n + 1), "{got:?}");
        if let Err(e) = same_bytes(&direct, &files.join("n3-k64")) {
            panic!("nginx in {ns}, /obj/n3/k64: {e}");
        }
    }
    let t_setup = t0.elapsed();

    let vip = c.vip();
    let client = c.client_ns.clone();
    let mut fresh = 0;
    let mut requests = 0;
    // One curl command fetching `objs` through the VIP; `extra` are further curl arguments.
    // Checks every response; returns the transfers.
    let mut fetch = |tag: &str, objs: &[Object], extra: &[&str]| -> Vec<Transfer> {
        let f: Vec<(String, PathBuf)> = objs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let url = format!("http://{vip}{}", o.path());
                (url, out.join(format!("{tag}-{i}")))
            })
            .collect();
        let got = curl(&client, extra, &f);
        let outs: Vec<PathBuf> = f.into_iter().map(|x| x.1).collect();
        if let Err(e) = verify(objs, &outs, &got, &files) {
            panic!("{tag}: {e}\n{}", c.snapshot().table());
        }
        fresh += got.iter().map(|t| t.connects as usize).sum::<usize>();
        requests += objs.len();
        got
    };
    // Owner changes between consecutive requests of `objs`: certain hand-offs on one connection.
    let changes = |objs: &[Object]| objs.windows(2).filter(|w| w[0].owner != w[1].owner).count();
    let grouped = by_owner_in_threes();
    let mut times = Vec::new();

    // 1. Sequential: one curl per object, a connection each.
    let t = Instant::now();
    for (i, o) in grouped.iter().enumerate() {
        let got = fetch(&format!("seq{i}"), std::slice::from_ref(o), &[]);
        assert_eq!(got[0].connects, 1, "{got:?}");
    }
    times.push(("sequential", t.elapsed()));

    // 2. Keep-alive: every object on one curl command line, so one connection carries them all
    //    and moves between the owners. (a) Owner by owner, 0 B .. 16 MiB each: two moves, at full
    //    speed. (b) The owner changing with every request (n1, n2, n3, n1, ...): 17 moves, at
    //    full speed too (a switch that kept old bindings for TIME-WAIT refused a fifth quick
    //    hand-off with too_many_hops, and the proxy then served where the connection was).
    let mut by_owner = Vec::new();
    let mut interleaved = Vec::new();
    for owner in 1..=NODES {
        for (name, len) in FILES {
            by_owner.push(Object { owner, name, len });
        }
    }
    for (name, len) in FILES {
        for owner in 1..=NODES {
            interleaved.push(Object { owner, name, len });
        }
    }
    let mut certain = 0;
    for (tag, objs, extra) in [
        ("keep-alive by owner", &by_owner, &[][..]),
        // Unpaced: a connection may hand off on every request (docs/protocol.md "Limits").
        ("keep-alive interleaved", &interleaved, &[][..]),
    ] {
        let t = Instant::now();
        let got = fetch(tag, objs, extra);
        let connects: Vec<u32> = got.iter().map(|t| t.connects).collect();
        assert!(
            connects[0] == 1 && connects[1..].iter().all(|&n| n == 0),
            "{tag}: the connection was not reused for every request: {got:?}"
        );
        certain += changes(objs);
        times.push((tag, t.elapsed()));
    }
    for s in &mut servers {
        s.check_alive();
    }

    // 3. `Connection: close` on every request of one curl command: a new connection each.
    let t = Instant::now();
    let got = fetch("close", &grouped, &["-H", "Connection: close"]);
    assert!(got.iter().all(|t| t.connects == 1), "{got:?}");
    times.push(("connection: close", t.elapsed()));
    for s in &mut servers {
        s.check_alive();
    }

    // The switch: hand-offs accepted and completed, nothing rolled back or reset.
    let snap = wait_table_empty(&c, Duration::from_secs(10));
    // Round robin over three nodes: of three consecutive fresh connections of the grouped runs
    // (owner n1, n1, n1, n2, ...), exactly two land on another node than the owner. Each
    // keep-alive connection's first request may or may not be handed off.
    let round_robin = certain + 2 * (2 * grouped.len() / 3);
    let completed = snap.core.handoffs_completed - after_probe.core.handoffs_completed;
    let accepted = snap.handoffs_accepted() - after_probe.handoffs_accepted();
    let table = snap.table();
    let times: Vec<String> = times
        .iter()
        .map(|(w, t)| format!("{w} {:.1} s", t.as_secs_f64()))
        .collect();
    eprintln!(
        "upstream test: {requests} requests on {fresh} connections, {accepted} hand-offs accepted, \
         {completed} completed (expected {round_robin}..={}); setup {:.1} s, {}\n{table}",
        round_robin + 2,
        t_setup.as_secs_f64(),
        times.join(", "),
    );
    assert!(accepted > 0, "no hand-off accepted\n{table}");
    assert!(
        completed >= certain as u64 && accepted >= completed,
        "{completed} hand-offs completed, {accepted} accepted, at least {certain} needed\n{table}"
    );
    assert!(
        (round_robin as u64..=round_robin as u64 + 2).contains(&completed),
        "{completed} hand-offs completed; round robin gives {round_robin}..={}\n{table}",
        round_robin + 2
    );
    assert_eq!(snap.core.handoffs_rolled_back, 0, "\n{table}");
    assert_eq!(
        snap.core.generated_count(Generated::AbortReset),
        0,
        "\n{table}"
    );
    assert_eq!(snap.ports[0].tx_rst, 0, "the client saw RSTs:\n{table}");
    c.stop_switch().expect("stop switch");
    drop(servers);
    drop(c);
    eprintln!("upstream test: {:.1} s in all", t0.elapsed().as_secs_f64());
}
