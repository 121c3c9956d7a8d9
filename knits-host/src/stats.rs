//! Counters of a running switch: a snapshot, a human table, Prometheus text, and a server.
//!
//! The event loop copies the core's [`Counters`] and its own per-port figures into a [`Snapshot`]
//! every 100 ms; a server thread answers from the latest copy, so nothing on the packet path
//! waits for a reader. Names of drop reasons, local kinds, generated frames and reply codes are
//! the core's `name()`s.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knits_core::counters::{Counters, DropReason, Generated, LocalKind};
use knits_core::wire::control::ReplyCode;

use crate::faults::FaultStats;

/// Host-side figures of one port.
#[derive(Debug, Clone, Default)]
pub struct PortStats {
    /// Interface name.
    pub name: String,
    /// Frames read from the TAP.
    pub rx_frames: u64,
    /// Bytes read (Ethernet frames, no virtio-net header).
    pub rx_bytes: u64,
    /// Frames written to the TAP.
    pub tx_frames: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// TSO/GSO frames read (each stands for several segments).
    pub rx_gso: u64,
    /// Reads that failed or returned a frame shorter than the virtio-net header.
    pub rx_errors: u64,
    /// Writes that failed (the frame is lost).
    pub tx_errors: u64,
    /// TCP segments with RST written to the port (a client should never see one for a
    /// hand-off that succeeded).
    pub tx_rst: u64,
    /// Fault injector on frames read from the port.
    pub faults_in: FaultStats,
    /// Fault injector on frames written to the port.
    pub faults_out: FaultStats,
}

/// Everything the stats server reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The core's counters.
    pub core: Counters,
    /// Flow entries in use.
    pub flows: usize,
    /// Flow capacity.
    pub flow_capacity: usize,
    /// Flow entries per TCP state (syn_sent, syn_received, established, fin_wait, closing,
    /// time_wait).
    pub flows_by_state: [usize; 6],
    /// Splice sessions in use.
    pub sessions: usize,
    /// Session capacity.
    pub session_capacity: usize,
    /// Per port, by port id.
    pub ports: Vec<PortStats>,
    /// Frames written to the pcap file.
    pub pcap_frames: u64,
    /// Seconds the switch has run.
    pub uptime_s: f64,
    /// Whether offloads are on.
    pub offloads: bool,
}

impl Snapshot {
    /// Hand-off requests accepted.
    pub fn handoffs_accepted(&self) -> u64 {
        self.core.handoffs[ReplyCode::Accepted.index()]
    }

    /// Hand-off requests refused (any code but accepted).
    pub fn handoffs_refused(&self) -> u64 {
        self.core.handoffs.iter().sum::<u64>() - self.handoffs_accepted()
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let c = &self.core;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "switch: up {:.1} s, offloads {}, flows {}/{}, splice sessions {}/{}",
            self.uptime_s,
            if self.offloads { "on" } else { "off" },
            self.flows,
            self.flow_capacity,
            self.sessions,
            self.session_capacity
        );
        let _ = writeln!(
            s,
            "  {:<4} {:<16} {:>10} {:>10} {:>12} {:>10} {:>12} {:>7} {:>6} {:>6} {:>6}",
            "port",
            "interface",
            "core rx",
            "core tx",
            "rx bytes",
            "tx frames",
            "tx bytes",
            "rx gso",
            "rx err",
            "tx err",
            "tx rst"
        );
        for (i, p) in self.ports.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:<4} {:<16} {:>10} {:>10} {:>12} {:>10} {:>12} {:>7} {:>6} {:>6} {:>6}",
                i,
                p.name,
                c.rx_frames.get(i).copied().unwrap_or(0),
                c.tx_frames.get(i).copied().unwrap_or(0),
                p.rx_bytes,
                p.tx_frames,
                p.tx_bytes,
                p.rx_gso,
                p.rx_errors,
                p.tx_errors,
                p.tx_rst
            );
        }
        if self.flows > 0 {
            let names = [
                "syn_sent",
                "syn_received",
                "established",
                "fin_wait",
                "closing",
                "time_wait",
            ];
            let v: Vec<String> = names
                .iter()
                .zip(self.flows_by_state)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(s, "flows by state: {}", v.join(", "));
        }
        let _ = writeln!(
            s,
            "hand-offs: accepted {}, refused {}, completed {}, rolled back {}",
            self.handoffs_accepted(),
            self.handoffs_refused(),
            c.handoffs_completed,
            c.handoffs_rolled_back
        );
        let nonzero = |pairs: Vec<(&str, u64)>| -> String {
            let v: Vec<String> = pairs
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            s,
            "  reply codes: {}",
            nonzero(
                ReplyCode::ALL
                    .iter()
                    .map(|r| (r.name(), c.handoffs[r.index()]))
                    .collect()
            )
        );
        let _ = writeln!(
            s,
            "sprayed: {}; routed flows {}; closed {}; expired {}",
            nonzero(
                c.sprayed
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (
                        [
                            "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10", "n11",
                            "n12", "n13", "n14", "n15"
                        ][i.min(14)],
                        *n
                    ))
                    .collect()
            ),
            c.tracked_routed,
            c.closed,
            c.expired
        );
        let _ = writeln!(
            s,
            "local: {}",
            nonzero(
                LocalKind::ALL
                    .iter()
                    .map(|k| (k.name(), c.local[k.index()]))
                    .collect()
            )
        );
        let _ = writeln!(
            s,
            "generated: {}",
            nonzero(
                Generated::ALL
                    .iter()
                    .map(|k| (k.name(), c.generated[k.index()]))
                    .collect()
            )
        );
        let _ = writeln!(
            s,
            "drops ({}): {}",
            c.total_drops(),
            nonzero(
                DropReason::ALL
                    .iter()
                    .map(|k| (k.name(), c.drops[k.index()]))
                    .collect()
            )
        );
        let mut fin = FaultStats::default();
        let mut fout = FaultStats::default();
        for p in &self.ports {
            fin.add(&p.faults_in);
            fout.add(&p.faults_out);
        }
        let injected = |f: &FaultStats| f.dropped + f.duplicated + f.reordered + f.corrupted;
        if injected(&fin) + injected(&fout) > 0 {
            let _ = writeln!(
                s,
                "faults injected: lost {}, duplicated {}, reordered {}, corrupted {}",
                fin.dropped + fout.dropped,
                fin.duplicated + fout.duplicated,
                fin.reordered + fout.reordered,
                fin.corrupted + fout.corrupted
            );
        }
        if self.pcap_frames > 0 {
            let _ = writeln!(s, "pcap: {} frames", self.pcap_frames);
        }
        s
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn prometheus(&self) -> String {
        let c = &self.core;
        let mut s = String::new();
        let family =
            |s: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
                let _ = writeln!(s, "# HELP knits_{name} {help}");
                let _ = writeln!(s, "# TYPE knits_{name} {kind}");
                for (labels, v) in samples {
                    if labels.is_empty() {
                        let _ = writeln!(s, "knits_{name} {v}");
                    } else {
                        let _ = writeln!(s, "knits_{name}{{{labels}}} {v}");
                    }
                }
            };
        let ports = self.ports.len().max(1);
        let per_port = |a: &[u64]| -> Vec<(String, u64)> {
            (0..ports)
                .map(|i| (format!("port=\"{i}\""), a.get(i).copied().unwrap_or(0)))
                .collect()
        };
        family(
            &mut s,
            "rx_frames_total",
            "counter",
            "Frames the core received, per port.",
            per_port(&c.rx_frames),
        );
        family(
            &mut s,
            "tx_frames_total",
            "counter",
            "Frames the core forwarded, per egress port.",
            per_port(&c.tx_frames),
        );
        family(
            &mut s,
            "drops_total",
            "counter",
            "Frames dropped by the core, by reason.",
            DropReason::ALL
                .iter()
                .map(|r| (format!("reason=\"{}\"", r.name()), c.drops[r.index()]))
                .collect(),
        );
        family(
            &mut s,
            "local_total",
            "counter",
            "Frames handled by the switch itself, by kind.",
            LocalKind::ALL
                .iter()
                .map(|r| (format!("kind=\"{}\"", r.name()), c.local[r.index()]))
                .collect(),
        );
        family(
            &mut s,
            "generated_total",
            "counter",
            "Frames generated by the switch, by kind.",
            Generated::ALL
                .iter()
                .map(|r| (format!("kind=\"{}\"", r.name()), c.generated[r.index()]))
                .collect(),
        );
        family(
            &mut s,
            "handoff_replies_total",
            "counter",
            "Hand-off requests answered, by reply code.",
            ReplyCode::ALL
                .iter()
                .map(|r| (format!("code=\"{}\"", r.name()), c.handoffs[r.index()]))
                .collect(),
        );
        family(
            &mut s,
            "handoffs_completed_total",
            "counter",
            "Hand-offs whose old legs were retired.",
            vec![(String::new(), c.handoffs_completed)],
        );
        family(
            &mut s,
            "handoffs_rolled_back_total",
            "counter",
            "Hand-offs rolled back.",
            vec![(String::new(), c.handoffs_rolled_back)],
        );
        family(
            &mut s,
            "sprayed_total",
            "counter",
            "Connections sprayed, per back-end index.",
            (0..ports.saturating_sub(1).max(1))
                .map(|i| {
                    (
                        format!("backend=\"{i}\""),
                        c.sprayed.get(i).copied().unwrap_or(0),
                    )
                })
                .collect(),
        );
        family(
            &mut s,
            "tracked_routed_total",
            "counter",
            "Routed connections tracked.",
            vec![(String::new(), c.tracked_routed)],
        );
        family(
            &mut s,
            "flows_expired_total",
            "counter",
            "Flow entries removed by expiry.",
            vec![(String::new(), c.expired)],
        );
        family(
            &mut s,
            "flows_closed_total",
            "counter",
            "Flow entries removed after TIME-WAIT.",
            vec![(String::new(), c.closed)],
        );
        family(
            &mut s,
            "flows",
            "gauge",
            "Flow table entries in use.",
            vec![(String::new(), self.flows as u64)],
        );
        family(
            &mut s,
            "flow_capacity",
            "gauge",
            "Flow table capacity.",
            vec![(String::new(), self.flow_capacity as u64)],
        );
        family(
            &mut s,
            "splice_sessions",
            "gauge",
            "Splice sessions in use.",
            vec![(String::new(), self.sessions as u64)],
        );
        family(
            &mut s,
            "splice_session_capacity",
            "gauge",
            "Splice session capacity.",
            vec![(String::new(), self.session_capacity as u64)],
        );
        let host = |f: fn(&PortStats) -> u64| -> Vec<(String, u64)> {
            self.ports
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("port=\"{i}\",interface=\"{}\"", p.name), f(p)))
                .collect()
        };
        family(
            &mut s,
            "host_rx_bytes_total",
            "counter",
            "Bytes read from the port's TAP.",
            host(|p| p.rx_bytes),
        );
        family(
            &mut s,
            "host_tx_frames_total",
            "counter",
            "Frames written to the port's TAP.",
            host(|p| p.tx_frames),
        );
        family(
            &mut s,
            "host_tx_bytes_total",
            "counter",
            "Bytes written to the port's TAP.",
            host(|p| p.tx_bytes),
        );
        family(
            &mut s,
            "host_rx_gso_frames_total",
            "counter",
            "TSO/GSO frames read.",
            host(|p| p.rx_gso),
        );
        family(
            &mut s,
            "host_rx_errors_total",
            "counter",
            "Failed or short TAP reads.",
            host(|p| p.rx_errors),
        );
        family(
            &mut s,
            "host_tx_errors_total",
            "counter",
            "Failed TAP writes.",
            host(|p| p.tx_errors),
        );
        family(
            &mut s,
            "host_tx_rst_total",
            "counter",
            "TCP RST segments written to the port.",
            host(|p| p.tx_rst),
        );
        let mut faults = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            for (dir, f) in [("in", &p.faults_in), ("out", &p.faults_out)] {
                for (kind, n) in [
                    ("lost", f.dropped),
                    ("duplicated", f.duplicated),
                    ("reordered", f.reordered),
                    ("corrupted", f.corrupted),
                ] {
                    faults.push((
                        format!("port=\"{i}\",direction=\"{dir}\",fault=\"{kind}\""),
                        n,
                    ));
                }
            }
        }
        family(
            &mut s,
            "host_faults_injected_total",
            "counter",
            "Faults injected, per port and direction.",
            faults,
        );
        family(
            &mut s,
            "host_pcap_frames_total",
            "counter",
            "Frames written to the pcap file.",
            vec![(String::new(), self.pcap_frames)],
        );
        s
    }
}

/// Where the stats server listens.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// HTTP (Prometheus) address; refuses anything but loopback.
    pub http: Option<SocketAddr>,
    /// Unix socket for `knits-host stats`.
    pub unix: Option<PathBuf>,
}

/// The unix socket path of the switch of run `prefix`.
pub fn socket_path(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/knits/{prefix}.sock"))
}

/// A running stats server; dropping it stops the threads and removes the unix socket.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    unix: Option<PathBuf>,
    /// The HTTP address actually bound (port 0 picks one).
    pub http_addr: Option<SocketAddr>,
}

fn answer_http(mut conn: std::net::TcpStream, snap: &Mutex<Snapshot>) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 || l == "\r\n" || l == "\n" {
            break;
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = if path == "/metrics" || path == "/" {
        (
            "200 OK",
            snap.lock().map(|s| s.prometheus()).unwrap_or_default(),
        )
    } else if path == "/stats" {
        ("200 OK", snap.lock().map(|s| s.table()).unwrap_or_default())
    } else {
        ("404 Not Found", "try /metrics or /stats\n".to_string())
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn answer_unix(conn: UnixStream, snap: &Mutex<Snapshot>) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let body = match line.trim() {
        "prom" => snap.lock().map(|s| s.prometheus()).unwrap_or_default(),
        _ => snap.lock().map(|s| s.table()).unwrap_or_default(),
    };
    (&conn).write_all(body.as_bytes())
}

impl Server {
    /// Starts the listeners that `cfg` names.
    pub fn start(cfg: &ServerConfig, snap: Arc<Mutex<Snapshot>>) -> io::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut http_addr = None;
        if let Some(addr) = cfg.http {
            if !addr.ip().is_loopback() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("metrics address {addr} is not a loopback address; use 127.0.0.1:PORT"),
                ));
            }
            let l = TcpListener::bind(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("metrics listener on {addr}: {e}"))
            })?;
            l.set_nonblocking(true)?;
            http_addr = Some(l.local_addr()?);
            let (stop, snap) = (stop.clone(), snap.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            let _ = c.set_nonblocking(false);
                            let _ = answer_http(c, &snap);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }));
        }
        let mut unix = None;
        if let Some(path) = &cfg.unix {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).map_err(|e| {
                io::Error::new(e.kind(), format!("stats socket {}: {e}", path.display()))
            })?;
            l.set_nonblocking(true)?;
            unix = Some(path.clone());
            let (stop, snap) = (stop.clone(), snap.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            let _ = c.set_nonblocking(false);
                            let _ = answer_unix(c, &snap);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }));
        }
        Ok(Server {
            stop,
            threads,
            unix,
            http_addr,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(p) = &self.unix {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Asks the switch behind the unix socket `path` for its table (`prom` false) or Prometheus text.
pub fn query(path: &Path, prom: bool) -> io::Result<String> {
    let mut c = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("no switch answers on {}: {e} (is `knits-host cluster up` running with that prefix?)", path.display()),
        )
    })?;
    c.write_all(if prom { b"prom\n" } else { b"table\n" })?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let mut s = Snapshot {
            flows: 3,
            flow_capacity: 4096,
            sessions: 1,
            session_capacity: 1024,
            ..Default::default()
        };
        s.core.rx_frames[0] = 10;
        s.core.tx_frames[1] = 9;
        s.core.drops[DropReason::TcpBadChecksum.index()] = 2;
        s.core.handoffs[ReplyCode::Accepted.index()] = 5;
        s.core.handoffs[ReplyCode::Busy.index()] = 1;
        s.core.generated[Generated::FakeClientFin.index()] = 4;
        s.ports = vec![
            PortStats {
                name: "k-client".into(),
                rx_bytes: 1000,
                ..Default::default()
            },
            PortStats {
                name: "k-n1".into(),
                ..Default::default()
            },
        ];
        s.ports[1].faults_out.dropped = 7;
        s
    }

    #[test]
    fn table_mentions_what_happened() {
        let t = snap().table();
        assert!(t.contains("flows 3/4096"), "{t}");
        assert!(t.contains("accepted 5, refused 1"), "{t}");
        assert!(t.contains("tcp_bad_checksum 2"), "{t}");
        assert!(t.contains("fake_client_fin 4"), "{t}");
        assert!(t.contains("k-client"), "{t}");
        assert!(t.contains("lost 7"), "{t}");
    }

    /// Every sample line is `name{labels} value` with a declared family; names use the core's.
    #[test]
    fn prometheus_text_is_well_formed() {
        let p = snap().prometheus();
        let mut declared = std::collections::HashSet::new();
        for line in p.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                declared.insert(it.next().unwrap().to_string());
                assert!(matches!(it.next(), Some("counter" | "gauge")));
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
            let family = name.split('{').next().unwrap();
            assert!(declared.contains(family), "undeclared {family}");
            assert!(
                family
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            );
        }
        assert!(p.contains("knits_drops_total{reason=\"tcp_bad_checksum\"} 2"));
        assert!(p.contains("knits_handoff_replies_total{code=\"accepted\"} 5"));
        assert!(p.contains("knits_flows 3"));
        assert!(p.contains(
            "knits_host_faults_injected_total{port=\"1\",direction=\"out\",fault=\"lost\"} 7"
        ));
        for r in DropReason::ALL {
            assert!(p.contains(&format!("reason=\"{}\"", r.name())));
        }
    }

    #[test]
    fn server_answers_http_and_unix() {
        let dir = std::env::temp_dir().join(format!("knits-stats-{}", std::process::id()));
        let sock = dir.join("s.sock");
        let shared = Arc::new(Mutex::new(snap()));
        let srv = Server::start(
            &ServerConfig {
                http: Some("127.0.0.1:0".parse().unwrap()),
                unix: Some(sock.clone()),
            },
            shared,
        )
        .unwrap();
        let addr = srv.http_addr.unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("knits_flows 3"));
        let t = query(&sock, false).unwrap();
        assert!(t.contains("flows 3/4096"));
        let p = query(&sock, true).unwrap();
        assert!(p.contains("knits_flows 3"));
        drop(srv);
        assert!(!sock.exists());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            Server::start(
                &ServerConfig {
                    http: Some("0.0.0.0:0".parse().unwrap()),
                    unix: None
                },
                Arc::default()
            )
            .is_err()
        );
    }
}
