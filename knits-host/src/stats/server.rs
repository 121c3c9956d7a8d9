//! The stats server: `GET /metrics` (and `/`) and `GET /stats` over HTTP through `tiny_http`, and
//! the unix socket that `knits-host stats` asks (one line in, `prom` or anything else, the text
//! out). Both answer from the latest [`Snapshot`] copy, never from the packet path.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Snapshot;
use super::prometheus::CONTENT_TYPE;

/// How long a listener thread waits for a request before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

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

fn answer_http(rq: tiny_http::Request, snap: &Mutex<Snapshot>) -> io::Result<()> {
    let (status, content_type, body) = match rq.url() {
        "/metrics" | "/" => (
            200,
            CONTENT_TYPE,
            snap.lock().map(|s| s.prometheus()).unwrap_or_default(),
        ),
        "/stats" => (
            200,
            "text/plain; charset=utf-8",
            snap.lock().map(|s| s.table()).unwrap_or_default(),
        ),
        _ => (
            404,
            "text/plain; charset=utf-8",
            "try /metrics or /stats\n".to_string(),
        ),
    };
    let header =
        tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
    rq.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header),
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
            let http = tiny_http::Server::http(addr)
                .map_err(|e| io::Error::other(format!("metrics listener on {addr}: {e}")))?;
            http_addr = http.server_addr().to_ip();
            let (stop, snap) = (stop.clone(), snap.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(rq)) = http.recv_timeout(POLL) {
                        let _ = answer_http(rq, &snap);
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
                        Err(_) => std::thread::sleep(POLL),
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
