//! The deterministic origin web server: `GET /obj/<name>?size=N` answers `N` bytes of object
//! `<name>` as [`crate::content::fill`] defines them, so clients verify any body without
//! storing it. HTTP/1.1 keep-alive and pipelining, HTTP/1.0, HEAD, `Content-Length`, bodies
//! streamed in 64 KiB pieces. Other routes:
//!
//! - `POST /echo` (or PUT): the request body back, framed as it came (length or chunked).
//! - anything else: 404; a method other than GET/HEAD on `/obj/`: 405.
//!
//! With a node id, every response carries `x-knits-node: <id>`, so tests see who served.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::conn::{BodyCursor, Conn, ReadHead};
use crate::content;
use crate::framing::{BodyFraming, Limits, RequestHead, Version, parse_request, simple_response};

/// Bytes generated per write of an object body.
pub const PIECE: usize = 64 * 1024;
/// Header naming the node that served.
pub const NODE_HEADER: &str = "x-knits-node";

/// Flags of `knits-proxy origin`.
#[derive(Debug, Clone, Args)]
pub struct OriginArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Node id to report in the `x-knits-node` response header.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Keep-alive idle limit.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub idle_ms: u64,
}

/// A parsed object request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRequest {
    /// Object name (the path after `/obj/`, as sent).
    pub name: String,
    /// Object size in bytes.
    pub size: u64,
}

/// What a target asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An object.
    Object(ObjectRequest),
    /// `/obj/` with a missing or bad `size`.
    BadObject,
    /// The echo endpoint.
    Echo,
    /// Nothing here.
    NotFound,
}

/// Maps a request target to a route.
pub fn route(target: &str) -> Route {
    let path = crate::framing::request_path(target);
    if path == "/echo" {
        return Route::Echo;
    }
    let Some(name) = path.strip_prefix("/obj/") else {
        return Route::NotFound;
    };
    if name.is_empty() {
        return Route::BadObject;
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    let size = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "size")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    match size {
        Some(size) => Route::Object(ObjectRequest {
            name: name.to_string(),
            size,
        }),
        None => Route::BadObject,
    }
}

/// The origin server.
#[derive(Debug)]
pub struct Origin {
    listener: TcpListener,
    node: Option<Arc<str>>,
    idle: Duration,
}

impl Origin {
    /// Binds `addr`; `node_id` goes into the `x-knits-node` header.
    pub async fn bind(addr: SocketAddr, node_id: Option<String>) -> io::Result<Origin> {
        let listener = crate::proxy::listen(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        Ok(Origin {
            listener,
            node: node_id.map(Arc::from),
            idle: Duration::from_secs(60),
        })
    }

    /// Sets the keep-alive idle limit.
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The listening address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((s, _)) => {
                    let node = self.node.clone();
                    let idle = self.idle;
                    tokio::spawn(async move { serve(s, node.as_deref(), idle).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "origin accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

fn head(status: u16, req: &RequestHead, node: Option<&str>, framing: &str, ctype: &str) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {} {}\r\n{framing}\r\ncontent-type: {ctype}\r\n",
        status,
        crate::framing::reason(status)
    );
    if let Some(n) = node {
        h.push_str(&format!("{NODE_HEADER}: {n}\r\n"));
    }
    if !req.keep_alive {
        h.push_str("connection: close\r\n");
    } else if req.version == Version::Http10 {
        h.push_str("connection: keep-alive\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

async fn serve(stream: TcpStream, node: Option<&str>, idle: Duration) {
    let _ = stream.set_nodelay(true);
    let mut c = Conn::new(stream);
    let limits = Limits::default();
    loop {
        let req = match c.read_head(idle, |b| parse_request(b, &limits)).await {
            Ok(ReadHead::Head(r)) => r,
            Ok(ReadHead::Bad(e)) => {
                let extra: Vec<(&str, &str)> = node.map(|n| (NODE_HEADER, n)).into_iter().collect();
                let _ = c
                    .write_all(&simple_response(e.status(), true, &extra))
                    .await;
                let _ = c.get_mut().shutdown().await;
                return;
            }
            _ => return,
        };
        c.consume(req.head_len);
        let is_head = req.method == "HEAD";
        let ok = match route(&req.target) {
            Route::Echo if matches!(req.method.as_str(), "POST" | "PUT") => {
                echo(&mut c, &req, node).await
            }
            Route::Object(o) if req.method == "GET" || is_head => {
                object(&mut c, &req, node, &o, is_head).await
            }
            other => {
                let status = match other {
                    Route::NotFound => 404,
                    Route::BadObject => 400,
                    _ => 405,
                };
                discard_body(&mut c, &req, idle).await
                    && error(&mut c, &req, node, status, status == 405).await
            }
        };
        if !ok || !req.keep_alive {
            let _ = c.get_mut().shutdown().await;
            return;
        }
    }
}

async fn discard_body(c: &mut Conn<TcpStream>, req: &RequestHead, idle: Duration) -> bool {
    c.copy_body(req.body, &mut tokio::io::sink(), false, idle)
        .await
        .is_ok()
}

async fn error(
    c: &mut Conn<TcpStream>,
    req: &RequestHead,
    node: Option<&str>,
    status: u16,
    get_head: bool,
) -> bool {
    let body = format!("{} {}\n", status, crate::framing::reason(status));
    let mut h = head(
        status,
        req,
        node,
        &format!("content-length: {}", body.len()),
        "text/plain",
    );
    if get_head {
        // RFC 9110 15.5.6: a 405 lists the allowed methods.
        let at = h.len() - 2;
        h.splice(at..at, b"allow: GET, HEAD\r\n".iter().copied());
    }
    if req.method != "HEAD" {
        h.extend_from_slice(body.as_bytes());
    }
    c.write_all(&h).await.is_ok()
}

async fn object(
    c: &mut Conn<TcpStream>,
    req: &RequestHead,
    node: Option<&str>,
    o: &ObjectRequest,
    is_head: bool,
) -> bool {
    if !discard_body(c, req, Duration::from_secs(30)).await {
        return false;
    }
    let h = head(
        200,
        req,
        node,
        &format!("content-length: {}", o.size),
        "application/octet-stream",
    );
    if c.write_all(&h).await.is_err() {
        return false;
    }
    if is_head {
        return true;
    }
    let mut buf = vec![0u8; PIECE.min(usize::try_from(o.size).unwrap_or(PIECE)).max(1)];
    let mut off = 0u64;
    while off < o.size {
        let n = (o.size - off).min(buf.len() as u64) as usize;
        content::fill(&o.name, off, &mut buf[..n]);
        if c.write_all(&buf[..n]).await.is_err() {
            return false;
        }
        off += n as u64;
    }
    true
}

async fn echo(c: &mut Conn<TcpStream>, req: &RequestHead, node: Option<&str>) -> bool {
    let framing = match req.body {
        BodyFraming::Chunked => "transfer-encoding: chunked".to_string(),
        BodyFraming::Length(n) => format!("content-length: {n}"),
        _ => "content-length: 0".to_string(),
    };
    if c.write_all(&head(200, req, node, &framing, "application/octet-stream"))
        .await
        .is_err()
    {
        return false;
    }
    let mut cursor = BodyCursor::new(req.body);
    loop {
        match c
            .body_piece(&mut cursor, false, Duration::from_secs(30))
            .await
        {
            Ok(Some(piece)) => {
                if c.write_all(&piece).await.is_err() {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/obj/abc?size=10"),
            Route::Object(ObjectRequest {
                name: "abc".into(),
                size: 10
            })
        );
        assert_eq!(
            route("/obj/a/b.bin?x=1&size=7"),
            Route::Object(ObjectRequest {
                name: "a/b.bin".into(),
                size: 7
            })
        );
        assert_eq!(route("/obj/abc"), Route::BadObject);
        assert_eq!(route("/obj/abc?size=-1"), Route::BadObject);
        assert_eq!(route("/obj/?size=1"), Route::BadObject);
        assert_eq!(route("/echo"), Route::Echo);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(route("/objx"), Route::NotFound);
    }
}
