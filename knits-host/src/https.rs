//! The cluster's HTTPS side: the services a cluster serves on the VIP (`--service 443:tls`,
//! `--service 5201:l4`; port 80 is HTTP unless told otherwise), the per-node certificates for
//! the TLS service, and the TLS server in every node namespace (Debian's nginx, terminating
//! TLS in front of the node's HTTP upstream).
//!
//! Names: node K owns `nK.<domain>` and `*.nK.<domain>` (the proxies' `--sni` rules route them
//! to K; the default domain is `knits.test`). Every node's certificate also holds `<domain>`
//! and `www.<domain>`, which no rule names: a connection for them is served where it landed,
//! as a content-blind balancer would. One cluster CA signs all, made fresh per run with
//! `rcgen`; clients trust it with `curl --cacert <log dir>/tls/ca.pem`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use knits_core::config::{Service, ServiceMode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The local TLS server's address in each node namespace (nginx, started by `cluster up`).
pub const TLS_UPSTREAM_PORT: u16 = 8443;
/// Where `cluster up` looks for nginx when it is not on `PATH`.
pub const NGINX_PATHS: [&str; 2] = ["/usr/sbin/nginx", "/usr/bin/nginx"];

/// Parses `PORT:MODE` (`443:tls`, `5201:l4`, `80:http`).
pub fn parse_service(s: &str) -> Result<Service, String> {
    let (port, mode) = s
        .split_once(':')
        .ok_or_else(|| format!("service {s:?}: expected PORT:MODE, e.g. 443:tls or 5201:l4"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("service {s:?}: port {port:?} is not 1-65535"))?;
    let mode = match mode.to_ascii_lowercase().as_str() {
        "http" => ServiceMode::Http,
        "tls" | "https" => ServiceMode::Tls,
        "l4" | "tcp" => ServiceMode::L4,
        m => {
            return Err(format!("service {s:?}: mode {m:?} must be http, tls or l4"));
        }
    };
    Ok(Service { port, mode })
}

/// The services of a cluster: port 80 as HTTP, then `extra` (a later entry for a port replaces
/// an earlier one). Checks what the harness can run: HTTP only on `http_port` (the proxy's
/// port), at most one TLS service (the proxy has one TLS listener), and the core's limit.
pub fn services(extra: &[String], http_port: u16) -> Result<Vec<Service>, String> {
    let mut v = vec![Service {
        port: http_port,
        mode: ServiceMode::Http,
    }];
    for s in extra {
        let s = parse_service(s)?;
        v.retain(|o| o.port != s.port);
        v.push(s);
    }
    if let Some(s) = v
        .iter()
        .find(|s| s.mode == ServiceMode::Http && s.port != http_port)
    {
        return Err(format!(
            "service {}:http: the proxies serve HTTP on port {http_port} only; use {}:l4 for a plain TCP service",
            s.port, s.port
        ));
    }
    if v.iter().filter(|s| s.mode == ServiceMode::Tls).count() > 1 {
        return Err(
            "more than one TLS service: the proxies have one TLS listener; keep one PORT:tls"
                .into(),
        );
    }
    if v.len() > knits_core::config::MAX_SERVICES {
        return Err(format!(
            "{} services: the switch serves at most {}",
            v.len(),
            knits_core::config::MAX_SERVICES
        ));
    }
    Ok(v)
}

/// The server names node `n` owns (1-based), for the proxies' rules and its certificate.
pub fn node_names(domain: &str, n: usize) -> [String; 2] {
    [format!("n{n}.{domain}"), format!("*.n{n}.{domain}")]
}

/// Every name node `n`'s certificate holds: its own names, then the shared `<domain>` and
/// `www.<domain>`.
pub fn cert_names(domain: &str, n: usize) -> Vec<String> {
    let mut names = node_names(domain, n).to_vec();
    names.push(domain.to_string());
    names.push(format!("www.{domain}"));
    names
}

/// The TLS files of a cluster, in `dir`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl TlsFiles {
    /// The cluster CA's certificate (give it to clients).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// Node `n`'s certificate chain.
    pub fn cert(&self, n: usize) -> PathBuf {
        self.dir.join(format!("n{n}.pem"))
    }
    /// Node `n`'s private key.
    pub fn key(&self, n: usize) -> PathBuf {
        self.dir.join(format!("n{n}.key"))
    }

    /// Makes a CA and a certificate per node (1..=nodes) in `dir`.
    pub fn make(dir: &Path, domain: &str, nodes: usize) -> Result<TlsFiles, String> {
        fn e(what: &'static str) -> impl Fn(rcgen::Error) -> String {
            move |err| format!("{what}: {err}")
        }
        std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let files = TlsFiles {
            dir: dir.to_path_buf(),
        };
        let ca_key = KeyPair::generate().map_err(e("CA key"))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e("CA"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("KNITS cluster CA ({domain})"));
        let ca = ca.self_signed(&ca_key).map_err(e("CA certificate"))?;
        write(&files.ca(), &ca.pem())?;
        for n in 1..=nodes {
            let names = cert_names(domain, n);
            let key = KeyPair::generate().map_err(e("node key"))?;
            let mut p = CertificateParams::new(names.clone()).map_err(e("node names"))?;
            p.distinguished_name
                .push(DnType::CommonName, names[0].clone());
            let cert = p
                .signed_by(&key, &ca, &ca_key)
                .map_err(e("node certificate"))?;
            // The chain nginx sends: the node's certificate, then the CA's.
            write(&files.cert(n), &(cert.pem() + &ca.pem()))?;
            write(&files.key(n), &key.serialize_pem())?;
        }
        Ok(files)
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The nginx executable: on `PATH`, or in the Debian places.
pub fn find_nginx() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nginx"));
    on_path
        .chain(NGINX_PATHS.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "a TLS service needs a TLS server on every node: install nginx (apt-get install \
             nginx-light), or run your own and pass --tls-upstream ADDR:PORT"
                .to_string()
        })
}

/// Writes node `n`'s nginx configuration into `dir` and returns its path: TLS (1.2 and 1.3,
/// HTTP/2 and HTTP/1.1, a session cache and tickets) on `listen`, with the node's certificate,
/// proxying every request to `upstream` (the node's HTTP server) and adding `x-tls-node: nN`.
pub fn nginx_conf(
    dir: &Path,
    files: &TlsFiles,
    n: usize,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let d = dir.display();
    // Workers run as root only when we are root: they must write the temp paths here.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;\n"
    } else {
        ""
    };
    let conf = format!(
        "worker_processes 1;\n\
         {user}\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n\
         \x20   proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   keepalive_timeout 60s;\n\
         \x20   keepalive_requests 10000;\n\
         \x20   ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20   ssl_session_cache shared:knits:4m;\n\
         \x20   ssl_session_timeout 10m;\n\
         \x20   ssl_session_tickets on;\n\
         \x20   upstream node {{ server {upstream}; keepalive 32; }}\n\
         \x20   server {{\n\
         \x20       listen {listen} ssl http2;\n\
         \x20       server_name _;\n\
         \x20       ssl_certificate {cert};\n\
         \x20       ssl_certificate_key {key};\n\
         \x20       add_header x-tls-node n{n} always;\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://node;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_buffering off;\n\
         \x20           proxy_request_buffering off;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        cert = files.cert(n).display(),
        key = files.key(n).display(),
    );
    let path = dir.join("nginx.conf");
    write(&path, &conf)?;
    Ok(path)
}

/// The TLS server's default address in a node namespace.
pub fn default_tls_upstream() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, TLS_UPSTREAM_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_parse_and_mistakes_say_what_to_fix() {
        let v = services(&["443:tls".into(), "5201:l4".into()], 80).unwrap();
        let modes: Vec<(u16, &str)> = v.iter().map(|s| (s.port, s.mode.name())).collect();
        assert_eq!(modes, [(80, "http"), (443, "tls"), (5201, "l4")]);
        let v = services(&["80:l4".into()], 80).unwrap();
        assert_eq!((v[0].port, v[0].mode), (80, ServiceMode::L4));
        let e = services(&["8080:http".into()], 80).unwrap_err();
        assert!(e.contains("8080:l4"), "{e}");
        let e = services(&["443:tls".into(), "8443:tls".into()], 80).unwrap_err();
        assert!(e.contains("one TLS"), "{e}");
        assert!(parse_service("443").unwrap_err().contains("PORT:MODE"));
        assert!(parse_service("0:tls").is_err());
        assert!(
            parse_service("443:quic")
                .unwrap_err()
                .contains("http, tls or l4")
        );
    }

    #[test]
    fn certificates_name_the_node() {
        let dir = std::env::temp_dir().join(format!("knits-https-test-{}", std::process::id()));
        let f = TlsFiles::make(&dir, "knits.test", 2).unwrap();
        let pem = std::fs::read_to_string(f.cert(2)).unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(
            std::fs::read_to_string(f.key(1))
                .unwrap()
                .contains("PRIVATE KEY")
        );
        let conf = nginx_conf(
            &dir.join("n2"),
            &f,
            2,
            "127.0.0.1:8443".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        )
        .unwrap();
        let text = std::fs::read_to_string(conf).unwrap();
        assert!(text.contains("listen 127.0.0.1:8443 ssl http2;"));
        assert!(text.contains("n2.pem"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
