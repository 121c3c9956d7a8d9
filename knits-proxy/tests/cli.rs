//! The binary: configuration errors say what to fix, and `origin` and `run` start and serve.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_knits-proxy");

fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} lacks {needle:?}"
    );
}

#[test]
fn bad_configuration_says_what_to_fix() {
    fails_with(&["run", "--listen", "127.0.0.1:80"], "--node-id");
    fails_with(
        &["run", "--node-id", "n1", "--upstream", "127.0.0.1:8080"],
        "--listen",
    );
    fails_with(&["run", "--peer", "n2"], "ID=ADDR:PORT");
    fails_with(&["run", "--policy", "random"], "possible values");
    fails_with(
        &[
            "check",
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
            "--policy",
            "hash",
        ],
        "--peer",
    );
    fails_with(
        &["run", "--config", "/nonexistent/knits.toml"],
        "cannot read config file",
    );
    let key = std::env::temp_dir().join(format!("knits-cli-badkey-{}", std::process::id()));
    std::fs::write(&key, "abc").unwrap();
    fails_with(
        &[
            "check",
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
            "--policy",
            "hash",
            "--peer",
            "n2=127.0.0.2:80",
            "--switch",
            "127.0.0.1:7100",
            "--key-file",
            key.to_str().unwrap(),
        ],
        "32 hex digits",
    );
    let ok = Command::new(BIN)
        .args([
            "check",
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Kills the child (by its own handle) when the test ends, also on a panic.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and returns it with the `listen=` address from its first log line.
fn start(args: &[&str]) -> (Kill, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--log-level", "info"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stderr.take().unwrap();
    let child = Kill(child);
    // Read the first log line on a thread, so a child that never logs fails the test instead
    // of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("no log line from the binary");
    let at = line
        .find("listen=")
        .unwrap_or_else(|| panic!("no listen= in {line:?}"));
    let addr = line[at + 7..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (child, addr)
}

#[tokio::test]
async fn origin_and_proxy_binaries_serve() {
    let (_o, oa) = start(&["origin", "--listen", "127.0.0.1:0", "--node-id", "n9"]);
    let up = oa.to_string();
    let (_p, pa) = start(&[
        "run",
        "--node-id",
        "n9",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up,
    ]);
    let mut c = client(pa).await;
    c.write_all(format!("{}{}", get("bin-1", 100_000), get("bin-2", 3)).as_bytes())
        .await
        .unwrap();
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "bin-1",
        100_000,
        "n9",
    );
    check_object(
        &read_response(&mut c, false).await.unwrap(),
        "bin-2",
        3,
        "n9",
    );
}
