//! Building the topologies in network namespaces (root only), and tearing them down.
//!
//! Every name carries a per-build prefix (`knits_host::netns::unique_prefix`); a
//! [`knits_host::netns::Guard`] owns the namespaces and the processes started in them (nginx,
//! HAProxy, knits-proxy) and removes them on drop, also on panic. The KNITS topologies are
//! knits-host's [`Cluster`] (which has its own guard) with nginx started in each node.
//!
//! ```text
//! Direct      c 198.18.0.2 ---veth--- s 198.18.0.10 (nginx :80)
//! routed      c 198.18.0.2 ---veth--- r 198.18.0.1 [+ VIP 198.18.0.10] ---veth--- nK 198.19.K.2
//!   Forward:    the client asks 198.19.1.2 (nginx :80 on n1), r forwards
//!   Netfilter:  the client asks the VIP, r: nftables DNAT to 198.19.1.2:80, SNAT to 198.19.1.1
//!   HAProxy:    HAProxy on VIP:80 in r, `path_beg /obj/nK/` to nK (nginx :80), 3 nodes
//!   ProxyAlone: as Netfilter, n1 runs knits-proxy (policy local) on :80, nginx on 127.0.0.1:8081
//! KNITS       knits-host cluster (3 nodes, spray weights 1,0,0), nginx on 127.0.0.1:8081 per node
//!   KnitsL4:    the same cluster with `--service 5201:l4`; nginx also on 0.0.0.0:5201 per node,
//!               the client asks VIP:5201 (sprayed with NAT to n1, no proxy in the path)
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knits_host::cluster::{Cluster, ClusterConfig, ProxySetup};
use knits_host::netns::{self, Guard};

use crate::scenario::{L4_PORT, Topology};

/// The nginx binary (Debian's nginx-light).
pub const NGINX: &str = "/usr/sbin/nginx";
/// The HAProxy binary (Debian's haproxy).
pub const HAPROXY: &str = "/usr/sbin/haproxy";
/// nginx's address behind a knits-proxy (loopback of the node namespace).
pub const UPSTREAM: &str = "127.0.0.1:8081";
/// The proxies' metrics address (loopback of each node namespace).
pub const PROXY_METRICS: &str = "127.0.0.1:9100";
/// The VIP of the NAT, L7 and KNITS topologies.
pub const VIP: &str = "198.18.0.10";

/// A topology that is up.
pub struct Built {
    /// The topology.
    pub topology: Topology,
    /// The client's namespace (wrk runs there).
    pub client_ns: String,
    /// The address the client asks (port 80).
    pub host: String,
    /// Namespaces whose processes' CPU time is sampled.
    pub namespaces: Vec<String>,
    /// Namespaces (in node order) where a knits-proxy serves metrics on [`PROXY_METRICS`].
    pub metrics_ns: Vec<String>,
    /// Where configurations and logs of this build live.
    pub dir: PathBuf,
    // Processes first (nginx, HAProxy, proxies), then the cluster, then our namespaces.
    procs: Option<Guard>,
    cluster: Option<Cluster>,
    _net: Option<Guard>,
}

impl Built {
    /// Stops everything (also done on drop).
    pub fn down(&mut self) {
        self.procs = None;
        if let Some(mut c) = self.cluster.take() {
            let _ = c.stop_switch();
            c.down();
        }
        self._net = None;
    }

    /// Fails when a started process or the cluster's services died.
    pub fn check(&mut self) -> Result<(), String> {
        if let Some(g) = &mut self.procs
            && let Some((label, st)) = g.exited_children().first()
        {
            return Err(format!(
                "{label} exited ({st}); see the logs in {}",
                self.dir.display()
            ));
        }
        if let Some(c) = &mut self.cluster {
            c.check_services()?;
        }
        Ok(())
    }

    /// The switch's hand-offs accepted so far (KNITS topologies).
    pub fn handoffs_accepted(&self) -> Option<u64> {
        self.cluster
            .as_ref()
            .map(|c| c.snapshot().handoffs_accepted())
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        self.down();
    }
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// Runs `ip netns exec ns program args...`, failing with its stderr.
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {program} in {ns}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl(ns: &str, settings: &[&str]) -> Result<(), String> {
    let mut a = vec!["-qw"];
    a.extend_from_slice(settings);
    exec_in(ns, "sysctl", &a).map(|_| ())
}

/// The client's own limits, the same in every topology: wrk closes each `Connection: close`
/// connection itself, so without port reuse the client namespace runs out of ports after ~28k
/// connections (docs/performance.md, "Real clients").
fn client_sysctls(ns: &str) -> Result<(), String> {
    sysctl(
        ns,
        &[
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 65535",
        ],
    )
}

/// A veth pair between two namespaces, addressed and up.
fn veth(a: (&str, &str, &str), b: (&str, &str, &str)) -> Result<(), String> {
    netns::ip(&[
        "link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0,
    ])
    .map_err(io)?;
    for (ns, ifn, addr) in [a, b] {
        netns::ip_batch(
            Some(ns),
            &format!("addr add {addr} dev {ifn}\nlink set dev {ifn} up\n"),
        )
        .map_err(io)?;
    }
    Ok(())
}

/// The files every nginx serves: `dir/www/s<size>` for each size (written once per run).
pub fn write_objects(www: &Path, sizes: &[u64]) -> Result<(), String> {
    std::fs::create_dir_all(www).map_err(|e| format!("{}: {e}", www.display()))?;
    for &n in sizes {
        let p = www.join(format!("s{n}"));
        if p.metadata().map(|m| m.len() == n).unwrap_or(false) {
            continue;
        }
        let mut f = File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut x = n ^ 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; 1 << 16];
        let mut left = n;
        while left > 0 {
            for c in buf.chunks_mut(8) {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
            }
            let k = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..k]).map_err(|e| e.to_string())?;
            left -= k as u64;
        }
    }
    Ok(())
}

/// nginx's configuration: one process (no master), sendfile, long keep-alive, no access log;
/// `/obj/nK/<file>` serves `www/<file>` for every K, so every node holds every object. One
/// server on every address of `listens`.
pub fn nginx_conf(dir: &Path, www: &Path, listens: &[&str]) -> String {
    let d = dir.display();
    let w = www.display();
    let listen: String = listens
        .iter()
        .map(|l| format!("        listen {l} reuseport backlog=4096;\n"))
        .collect();
    format!(
        "daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         user root root;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n\
         \x20   proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   default_type application/octet-stream;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   keepalive_timeout 120s;\n\
         \x20   keepalive_requests 100000000;\n\
         \x20   server {{\n\
         {listen}\
         \x20       root {w};\n\
         \x20       location /obj/ {{ rewrite ^/obj/n[0-9]+/(.*)$ /$1 break; }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// HAProxy's configuration: one thread, HTTP mode, keep-alive both sides, by path to the owner.
pub fn haproxy_conf(nodes: usize) -> String {
    let mut c = String::from(
        "global\n    nbthread 1\n    maxconn 4096\n\
         defaults\n    mode http\n    option http-keep-alive\n    timeout connect 5s\n    \
         timeout client 120s\n    timeout server 120s\n    timeout http-keep-alive 120s\n\
         frontend fe\n",
    );
    c += &format!("    bind {VIP}:80\n");
    for k in 1..=nodes {
        c += &format!("    use_backend n{k} if {{ path_beg /obj/n{k}/ }}\n");
    }
    c += "    default_backend n1\n";
    for k in 1..=nodes {
        c += &format!("backend n{k}\n    server n{k} 198.19.{k}.2:80\n");
    }
    c
}

/// nftables for the Netfilter row: DNAT VIP:80 to node 1, SNAT to the router's node address.
pub fn nft_rules() -> String {
    format!(
        "table ip knitsbench {{\n\
         \x20 chain pre {{ type nat hook prerouting priority dstnat; ip daddr {VIP} tcp dport 80 dnat to 198.19.1.2:80; }}\n\
         \x20 chain post {{ type nat hook postrouting priority srcnat; ip daddr 198.19.1.2 snat to 198.19.1.1; }}\n\
         }}\n"
    )
}

/// What a build needs to know.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Directory for this run's files (objects, configurations, logs).
    pub work: PathBuf,
    /// The served objects (`work/www`).
    pub www: PathBuf,
    /// This executable (provides `exec-proxy` for the cluster and the proxy-alone topology).
    pub exe: PathBuf,
}

fn spawn_nginx(
    g: &mut Guard,
    ns: &str,
    dir: &Path,
    www: &Path,
    listens: &[&str],
) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, www, listens)).map_err(|e| e.to_string())?;
    let log = File::create(dir.join("nginx.out")).ok();
    g.spawn_in(
        ns,
        &format!("nginx in {ns}"),
        NGINX,
        &["-c".into(), conf.to_string_lossy().into_owned()],
        log,
    )
    .map_err(io)?;
    Ok(())
}

/// Builds `t` with prefix `prefix`; returns when the client can fetch an object.
pub fn build(t: Topology, prefix: &str, s: &Setup) -> Result<Built, String> {
    let dir = s.work.join(prefix);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut built = match t {
        Topology::Knits {
            offloads,
            shards,
            pool,
        } => build_knits(t, prefix, s, &dir, offloads, shards, pool)?,
        Topology::KnitsL4 => build_knits(t, prefix, s, &dir, true, 1, 0)?,
        _ => build_kernel(t, prefix, s, &dir)?,
    };
    let probe_path = "/obj/n1/s1024";
    wait_http(
        &built.client_ns,
        &built.host,
        probe_path,
        Duration::from_secs(20),
    )
    .map_err(|e| format!("{}: {e}", t.label()))?;
    built.check()?;
    Ok(built)
}

fn build_kernel(t: Topology, prefix: &str, s: &Setup, dir: &Path) -> Result<Built, String> {
    let mut net = Guard::new(prefix)?;
    let mut procs = Guard::new(prefix)?;
    let c = net.add_namespace("c").map_err(io)?;
    let mut namespaces = vec![c.clone()];
    let (host, metrics_ns) = if t == Topology::Direct {
        let srv = net.add_namespace("s").map_err(io)?;
        veth(
            (&c, "eth0", "198.18.0.2/24"),
            (&srv, "eth0", "198.18.0.10/24"),
        )?;
        spawn_nginx(
            &mut procs,
            &srv,
            &dir.join("nginx-s"),
            &s.www,
            &["0.0.0.0:80"],
        )?;
        namespaces.push(srv);
        (VIP.to_string(), Vec::new())
    } else {
        let r = net.add_namespace("r").map_err(io)?;
        veth((&c, "eth0", "198.18.0.2/24"), (&r, "c0", "198.18.0.1/24"))?;
        netns::ip_batch(Some(&c), "route add default via 198.18.0.1\n").map_err(io)?;
        sysctl(&r, &["net.ipv4.ip_forward=1"])?;
        namespaces.push(r.clone());
        let nodes = if t == Topology::Haproxy { 3 } else { 1 };
        let mut n1 = String::new();
        for k in 1..=nodes {
            let n = net.add_namespace(&format!("n{k}")).map_err(io)?;
            veth(
                (&r, &format!("n{k}"), &format!("198.19.{k}.1/24")),
                (&n, "eth0", &format!("198.19.{k}.2/24")),
            )?;
            netns::ip_batch(Some(&n), &format!("route add default via 198.19.{k}.1\n"))
                .map_err(io)?;
            let listen = if t == Topology::ProxyAlone {
                UPSTREAM
            } else {
                "0.0.0.0:80"
            };
            spawn_nginx(
                &mut procs,
                &n,
                &dir.join(format!("nginx-n{k}")),
                &s.www,
                &[listen],
            )?;
            if k == 1 {
                n1 = n.clone();
            }
            namespaces.push(n);
        }
        if t != Topology::Forward {
            netns::ip_batch(Some(&r), &format!("addr add {VIP}/24 dev c0\n")).map_err(io)?;
        }
        if matches!(t, Topology::Netfilter | Topology::ProxyAlone) {
            let f = dir.join("nat.nft");
            std::fs::write(&f, nft_rules()).map_err(|e| e.to_string())?;
            exec_in(&r, "nft", &["-f", &f.to_string_lossy()])?;
        }
        if t == Topology::Haproxy {
            let f = dir.join("haproxy.cfg");
            std::fs::write(&f, haproxy_conf(nodes)).map_err(|e| e.to_string())?;
            let log = File::create(dir.join("haproxy.out")).ok();
            procs
                .spawn_in(
                    &r,
                    "haproxy",
                    HAPROXY,
                    &["-db".into(), "-f".into(), f.to_string_lossy().into_owned()],
                    log,
                )
                .map_err(io)?;
        }
        let mut metrics_ns = Vec::new();
        if t == Topology::ProxyAlone {
            let log = File::create(dir.join("proxy-n1.log")).ok();
            let args: Vec<String> = [
                "--threads",
                "1",
                "exec-proxy",
                "--node-id",
                "n1",
                "--listen",
                "198.19.1.2:80",
                "--upstream",
                UPSTREAM,
                "--policy",
                "local",
                "--metrics",
                PROXY_METRICS,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            procs
                .spawn_in(&n1, "knits-proxy n1", &s.exe.to_string_lossy(), &args, log)
                .map_err(io)?;
            metrics_ns.push(n1);
        }
        let host = if t == Topology::Forward {
            "198.19.1.2".to_string()
        } else {
            VIP.to_string()
        };
        (host, metrics_ns)
    };
    client_sysctls(&c)?;
    Ok(Built {
        topology: t,
        client_ns: c,
        host,
        namespaces,
        metrics_ns,
        dir: dir.to_path_buf(),
        procs: Some(procs),
        cluster: None,
        _net: Some(net),
    })
}

fn build_knits(
    t: Topology,
    prefix: &str,
    s: &Setup,
    dir: &Path,
    offloads: bool,
    shards: usize,
    pool: usize,
) -> Result<Built, String> {
    let mut extra = vec!["--metrics".to_string(), PROXY_METRICS.to_string()];
    if pool > 0 {
        extra.extend(["--c2-pool".to_string(), pool.to_string()]);
    }
    let l4 = t == Topology::KnitsL4;
    let l4_listen = format!("0.0.0.0:{L4_PORT}");
    let listens: Vec<&str> = if l4 {
        vec![UPSTREAM, &l4_listen]
    } else {
        vec![UPSTREAM]
    };
    let cfg = ClusterConfig {
        nodes: 3,
        services: if l4 {
            vec![format!("{L4_PORT}:l4")]
        } else {
            Vec::new()
        },
        prefix: Some(prefix.to_string()),
        offloads,
        shards,
        weights: vec![1, 0, 0],
        upstream: Some(UPSTREAM.parse().map_err(|e| format!("{e}"))?),
        origin: false,
        log_dir: Some(dir.join("cluster-logs")),
        proxy: ProxySetup {
            policy: "prefix".into(),
            extra_args: extra,
            threads: 1,
        },
        ..ClusterConfig::default()
    };
    let mut cluster = Cluster::up(cfg, &s.exe)?;
    cluster.start_switch()?;
    cluster
        .wait_ready(Duration::from_secs(30))
        .map_err(|e| format!("{e} (logs: {})", dir.join("cluster-logs").display()))?;
    let mut procs = Guard::new(prefix)?;
    let nodes = cluster.node_ns.clone();
    for (k, ns) in nodes.iter().enumerate() {
        spawn_nginx(
            &mut procs,
            ns,
            &dir.join(format!("nginx-n{}", k + 1)),
            &s.www,
            &listens,
        )?;
    }
    let client = cluster.client_ns.clone();
    client_sysctls(&client)?;
    Ok(Built {
        topology: t,
        client_ns: client,
        host: if l4 {
            format!("{VIP}:{L4_PORT}")
        } else {
            VIP.to_string()
        },
        metrics_ns: nodes.clone(),
        namespaces: nodes,
        dir: dir.to_path_buf(),
        procs: Some(procs),
        cluster: Some(cluster),
        _net: None,
    })
}

/// Runs `f` on a fresh thread inside namespace `ns`.
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        netns::enter(&ns).map_err(io)?;
        f()
    })
    .join()
    .map_err(|_| "namespace thread panicked".to_string())?
}

/// One HTTP/1.0-style exchange (`Connection: close`), the whole answer.
fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut v = Vec::new();
    s.read_to_end(&mut v).map_err(io)?;
    Ok(v)
}

/// Waits until `GET path` from the client namespace is answered 200; `host` is an address with
/// or without a port (80).
pub fn wait_http(ns: &str, host: &str, path: &str, timeout: Duration) -> Result<(), String> {
    let with_port = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let addr: SocketAddr = with_port.parse().map_err(|e| format!("{host}: {e}"))?;
    let (host, path) = (host.to_string(), path.to_string());
    in_namespace(ns, move || {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match http_get(addr, &host, &path) {
                Ok(v) if v.starts_with(b"HTTP/1.1 200") => return Ok(()),
                Ok(v) => {
                    last = String::from_utf8_lossy(&v[..v.len().min(80)]).into_owned();
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "GET http://{host}{path} never answered 200 (last: {last})"
        ))
    })
}

/// The hand-off metrics of every knits-proxy in `namespaces`, added together (a hand-off is
/// counted by the node that gives the connection away, which is node 2 for the second hand-off
/// of KNITS-Handoff-2).
pub fn proxies_metrics(namespaces: &[String]) -> Result<crate::prom::ProxyMetrics, String> {
    let mut m = crate::prom::ProxyMetrics::default();
    for ns in namespaces {
        m = m.plus(&crate::prom::parse(&proxy_metrics(ns)?));
    }
    Ok(m)
}

/// The Prometheus text of the knits-proxy in namespace `ns`.
pub fn proxy_metrics(ns: &str) -> Result<String, String> {
    let addr: SocketAddr = PROXY_METRICS.parse().map_err(|e| format!("{e}"))?;
    in_namespace(ns, move || {
        let v = http_get(addr, "metrics", "/metrics")?;
        let t = String::from_utf8_lossy(&v).into_owned();
        Ok(t.split_once("\r\n\r\n")
            .map_or(t.clone(), |(_, b)| b.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations() {
        let n = nginx_conf(
            Path::new("/w/n1"),
            Path::new("/w/www"),
            &["127.0.0.1:8081", "0.0.0.0:5201"],
        );
        assert!(n.contains("        listen 127.0.0.1:8081 reuseport backlog=4096;\n"));
        assert!(n.contains("        listen 0.0.0.0:5201 reuseport"));
        assert!(n.contains("root /w/www;"));
        assert!(n.contains("keepalive_requests 100000000;"));
        assert_eq!(n.matches('{').count(), n.matches('}').count());
        let h = haproxy_conf(3);
        assert!(h.contains("bind 198.18.0.10:80"));
        assert!(h.contains("use_backend n3 if { path_beg /obj/n3/ }"));
        assert!(h.contains("server n2 198.19.2.2:80"));
        let f = nft_rules();
        assert!(f.contains("dnat to 198.19.1.2:80") && f.contains("snat to 198.19.1.1"));
    }

    #[test]
    fn objects_have_their_size() {
        let d = std::env::temp_dir().join(format!("knits-bench-objs-{}", std::process::id()));
        write_objects(&d, &[0, 1000, 70_000]).unwrap();
        for n in [0u64, 1000, 70_000] {
            assert_eq!(d.join(format!("s{n}")).metadata().unwrap().len(), n);
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
