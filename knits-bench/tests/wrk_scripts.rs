//! The request scripts as wrk runs them: a small HTTP server on loopback records every
//! request, and wrk (Debian's, unmodified) runs each script against it for one second. This is
//! where a script's counter meets wrk's own calls (wrk 4.1 calls `request()` once before any
//! connection and drops that request), which no unit test of the script text can see. Needs
//! only wrk; prints a visible skip without it (and fails when KNITS_REQUIRE_ROOT=1, as CI sets
//! it, since CI installs wrk).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use knits_bench::wrk::{sequence_script, two_owner_script};

/// (connection number, path, `Connection: close` asked) per request, in arrival order.
type Log = Arc<Mutex<Vec<(usize, String, bool)>>>;

fn serve(conn: usize, mut s: TcpStream, log: Log) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let close = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case("connection: close"));
            log.lock().unwrap().push((conn, path, close));
            let resp: &[u8] = if close {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if s.write_all(resp).is_err() || close {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn run_wrk(script: &str) -> Option<Vec<(usize, String, bool)>> {
    if !Path::new("/usr/bin/wrk").exists() {
        assert!(
            std::env::var("KNITS_REQUIRE_ROOT").as_deref() != Ok("1"),
            "/usr/bin/wrk is missing and KNITS_REQUIRE_ROOT=1 is set"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: wrk scripts: /usr/bin/wrk is missing (apt-get install wrk)"
        );
        return None;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for (i, s) in l.incoming().enumerate() {
            let Ok(s) = s else { continue };
            let log = log2.clone();
            std::thread::spawn(move || serve(i, s, log));
        }
    });
    let f = std::env::temp_dir().join(format!(
        "knits-bench-script-{}-{}.lua",
        std::process::id(),
        script.len()
    ));
    std::fs::write(&f, script).unwrap();
    let out = Command::new("wrk")
        .args(["-t1", "-c1", "-d1s", "-s"])
        .arg(&f)
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run wrk");
    let _ = std::fs::remove_file(&f);
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut v = log.lock().unwrap().clone();
    assert!(v.len() > 20, "wrk sent only {} requests", v.len());
    // Number the connections that carried requests 0, 1, ... in the order of their first
    // request (a connection may be accepted without a request).
    let mut order: Vec<usize> = Vec::new();
    for r in &v {
        if !order.contains(&r.0) {
            order.push(r.0);
        }
    }
    for r in &mut v {
        r.0 = order.iter().position(|c| *c == r.0).unwrap();
    }
    Some(v)
}

#[test]
fn knits_handoff_2_sequences_go_to_node_2_then_node_3() {
    let paths = ["/obj/n2/s1024".to_string(), "/obj/n3/s1024".to_string()];
    let Some(log) = run_wrk(&sequence_script(&paths)) else {
        return;
    };
    // Every connection: n2 (kept alive), then n3 with Connection: close; the last connection
    // may be cut by the end of the run.
    let conns = log.iter().map(|r| r.0).max().unwrap() + 1;
    assert!(conns > 10, "only {conns} connections");
    for c in 0..conns {
        let reqs: Vec<(&str, bool)> = log
            .iter()
            .filter(|r| r.0 == c)
            .map(|r| (r.1.as_str(), r.2))
            .collect();
        let want = [("/obj/n2/s1024", false), ("/obj/n3/s1024", true)];
        if c + 1 == conns {
            assert_eq!(reqs[..], want[..reqs.len()], "connection {c}");
        } else {
            assert_eq!(reqs, want, "connection {c}");
        }
    }
}

#[test]
fn a_three_request_sequence_stays_on_node_3() {
    let paths = ["/a/2", "/a/3", "/a/3"].map(String::from);
    let Some(log) = run_wrk(&sequence_script(&paths)) else {
        return;
    };
    let first: Vec<(&str, bool)> = log
        .iter()
        .filter(|r| r.0 == 0)
        .map(|r| (r.1.as_str(), r.2))
        .collect();
    assert_eq!(first, [("/a/2", false), ("/a/3", false), ("/a/3", true)]);
}

#[test]
fn the_persistent_knits_handoff_2_script_asks_node_2_first() {
    let Some(log) = run_wrk(&two_owner_script("/obj/n2/x", "/obj/n3/x")) else {
        return;
    };
    assert!(
        log.iter().all(|r| r.0 == 0 && !r.2),
        "one persistent connection"
    );
    assert_eq!(log[0].1, "/obj/n2/x", "the first request sent");
    assert!(log[1..].iter().all(|r| r.1 == "/obj/n3/x"));
}
