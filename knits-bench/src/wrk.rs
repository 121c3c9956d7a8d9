//! wrk (the unmodified client of every scenario): its command line and its text output.

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    /// The run's length as wrk printed it (seconds, two decimals).
    pub seconds: f64,
    /// Requests per second (wrk's own figure: completed requests / run time).
    pub rps: f64,
    /// Mean latency, microseconds.
    pub lat_mean_us: f64,
    /// Latency percentiles (from `--latency`), microseconds.
    pub lat_p50_us: f64,
    /// 99th percentile, microseconds.
    pub lat_p99_us: f64,
    /// Socket errors: connect + read + write + timeout.
    pub socket_errors: u64,
    /// Responses outside 2xx/3xx.
    pub non_2xx: u64,
}

/// Parses a wrk duration: `62.29us`, `1.06ms`, `2.00s`, `1.50m`, `1.00h`.
pub fn parse_time_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    num.trim().parse::<f64>().ok().map(|v| v * mult)
}

/// Parses wrk's report (run with `--latency`). Errors name the line that is missing.
pub fn parse(out: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult::default();
    let (mut have_reqs, mut have_rps, mut have_lat, mut in_dist) = (false, false, false, false);
    let (mut p50, mut p99) = (None, None);
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let [pct, val] = words[..]
                && let Some(p) = pct.strip_suffix('%')
            {
                match p {
                    "50" => p50 = parse_time_us(val),
                    "99" => p99 = parse_time_us(val),
                    _ => {}
                }
                continue;
            }
            in_dist = false;
        }
        if words.first() == Some(&"Latency") && words.len() >= 2 {
            r.lat_mean_us = parse_time_us(words[1])
                .ok_or_else(|| format!("wrk: cannot read the mean latency in {t:?}"))?;
            have_lat = true;
        } else if words.len() >= 4 && words[1] == "requests" && words[2] == "in" {
            r.requests = words[0]
                .parse()
                .map_err(|_| format!("wrk: cannot read the request count in {t:?}"))?;
            r.seconds = parse_time_us(words[3].trim_end_matches(','))
                .ok_or_else(|| format!("wrk: cannot read the duration in {t:?}"))?
                / 1e6;
            have_reqs = true;
        } else if let Some(rest) = t.strip_prefix("Requests/sec:") {
            r.rps = rest
                .trim()
                .parse()
                .map_err(|_| format!("wrk: cannot read Requests/sec in {t:?}"))?;
            have_rps = true;
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            r.socket_errors = rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().last())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = rest.trim().parse().unwrap_or(u64::MAX);
        }
    }
    if !have_reqs {
        return Err(format!(
            "wrk: no \"N requests in T\" line in its output:\n{out}"
        ));
    }
    if !have_rps {
        return Err(format!("wrk: no Requests/sec line in its output:\n{out}"));
    }
    if r.requests > 0 {
        if !have_lat {
            return Err(format!("wrk: no latency line in its output:\n{out}"));
        }
        r.lat_p50_us = p50.ok_or("wrk: no 50% line (was --latency given?)")?;
        r.lat_p99_us = p99.ok_or("wrk: no 99% line (was --latency given?)")?;
    } else {
        (r.lat_p50_us, r.lat_p99_us, r.lat_mean_us) = (f64::NAN, f64::NAN, f64::NAN);
    }
    Ok(r)
}

/// A wrk invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Threads.
    pub threads: usize,
    /// Connections.
    pub connections: usize,
    /// Seconds (wrk takes whole seconds).
    pub seconds: u64,
    /// `Connection: close` on every request (one request per connection).
    pub close: bool,
    /// Lua script (None: wrk's fixed request).
    pub script: Option<String>,
    /// The URL.
    pub url: String,
}

impl Invocation {
    /// wrk's arguments (without the program).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{}s", self.seconds.max(1)),
            "--timeout".into(),
            "10s".into(),
            "--latency".into(),
        ];
        if self.close {
            a.push("-H".into());
            a.push("Connection: close".into());
        }
        if let Some(s) = &self.script {
            a.push("-s".into());
            a.push(s.clone());
        }
        a.push(self.url.clone());
        a
    }
}

/// The first line of every request script: wrk 4.1 calls `request()` once on thread 0's Lua
/// state before any connection exists (`script_verify_request`, to count pipelined requests)
/// and throws that request away, so a script that counts calls must not count that one. The
/// scripts here run with one thread (`-t1 -c1`), so exactly one call is dropped; a counter from
/// 0 would make the first request sent the second of the sequence (the script before this
/// fix sent every KNITS-Handoff-2 request to node 3: one hand-off per connection, not two).
pub const SKIP_VERIFY_CALL: &str = "local n = -1 -- wrk's script_verify_request call is not sent\n";

/// The Lua script for KNITS-Handoff-2 over one persistent connection: the first request for
/// `first`, every later one for `then` (two hand-offs per wrk run, then only requests after
/// them). wrk keeps one Lua state per thread, and these runs use one connection per thread, so
/// a counter in the state is a counter per connection.
pub fn two_owner_script(first: &str, then: &str) -> String {
    format!(
        "-- KNITS-Handoff-2: first request {first}, later ones {then} (one connection, -t1 -c1)\n\
         {SKIP_VERIFY_CALL}\
         request = function()\n\
         \x20 n = n + 1\n\
         \x20 if n <= 1 then return wrk.format(\"GET\", \"{first}\") end\n\
         \x20 return wrk.format(\"GET\", \"{then}\")\n\
         end\n"
    )
}

/// The Lua script of a request sequence (the paper's serialized runs with hand-offs): every
/// connection carries `paths.len()` requests, the k-th for `paths[k]`, the last one with
/// `Connection: close`; the server closes, wrk connects again and the next sequence starts.
/// With `["/obj/n2/..", "/obj/n3/.."]` on a connection that lands on node 1, each connection is
/// handed off twice (n1 to n2 at its first request, n2 to n3 at its second): KNITS-Handoff-2
/// as section V defines it. One connection per thread (`-t1 -c1`): wrk's Lua state is per
/// thread, and a reconnect does not reset it, so the counter is kept modulo the sequence.
pub fn sequence_script(paths: &[String]) -> String {
    let mut s = format!(
        "-- {} requests per connection, the last with Connection: close (-t1 -c1)\n",
        paths.len()
    );
    s += "local paths = {";
    s += &paths
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    s += "}\n";
    s += SKIP_VERIFY_CALL;
    s += "request = function()\n\
          \x20 n = n + 1\n\
          \x20 local k = math.max(n - 1, 0) % #paths + 1\n\
          \x20 if k == #paths then\n\
          \x20   return wrk.format(\"GET\", paths[k], { [\"Connection\"] = \"close\" })\n\
          \x20 end\n\
          \x20 return wrk.format(\"GET\", paths[k])\n\
          end\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: &str = "Running 1s test @ http://127.0.0.1:18777/f
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.18ms    1.51ms  13.23ms   84.40%
    Req/Sec     1.23k   657.73     2.44k    60.00%
  Latency Distribution
     50%  416.00us
     75%    1.74ms
     90%    3.33ms
     99%    6.76ms
  1232 requests in 1.00s, 1.44MB read
Requests/sec:   1230.51
Transfer/sec:      1.44MB
";

    const ERRORS: &str = "Running 2s test @ http://198.18.0.10/x
  64 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    62.29us   20.06us   1.06s    94.85%
    Req/Sec    15.57k     1.23k   16.89k    72.73%
  Latency Distribution
     50%   58.00us
     75%   63.00us
     90%   72.00us
     99%    1.02s
  17021 requests in 2.10s, 20.36MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:   8105.24
Transfer/sec:      9.69MB
";

    #[test]
    fn parses_a_clean_run() {
        let r = parse(KEEPALIVE).unwrap();
        assert_eq!(r.requests, 1232);
        assert_eq!(r.seconds, 1.0);
        assert_eq!(r.rps, 1230.51);
        assert!((r.lat_mean_us - 1180.0).abs() < 1e-6);
        assert!((r.lat_p50_us - 416.0).abs() < 1e-9);
        assert!((r.lat_p99_us - 6760.0).abs() < 1e-6);
        assert_eq!((r.socket_errors, r.non_2xx), (0, 0));
    }

    #[test]
    fn parses_errors_and_units() {
        let r = parse(ERRORS).unwrap();
        assert_eq!((r.requests, r.socket_errors, r.non_2xx), (17021, 6, 5));
        assert!((r.seconds - 2.1).abs() < 1e-12);
        assert!((r.lat_p99_us - 1.02e6).abs() < 1e-3);
        assert!((r.lat_mean_us - 62.29).abs() < 1e-9);
    }

    #[test]
    fn zero_requests_have_no_latency() {
        let out = "Running 1s test @ http://x/\n  1 threads and 1 connections\n  \
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n    \
                   Latency     0.00us    0.00us   0.00us    -nan%\n  Latency Distribution\n  \
                   0 requests in 1.00s, 0.00B read\n  Socket errors: connect 1, read 0, write 0, timeout 0\n\
                   Requests/sec:      0.00\nTransfer/sec:       0.00B\n";
        let r = parse(out).unwrap();
        assert_eq!((r.requests, r.socket_errors), (0, 1));
        assert!(r.lat_p50_us.is_nan());
    }

    #[test]
    fn missing_lines_are_errors() {
        assert!(parse("").unwrap_err().contains("requests in"));
        let no_dist = KEEPALIVE.replace("     50%  416.00us\n", "");
        assert!(parse(&no_dist).unwrap_err().contains("50%"));
        let no_rps = KEEPALIVE.replace("Requests/sec:   1230.51\n", "");
        assert!(parse(&no_rps).unwrap_err().contains("Requests/sec"));
    }

    #[test]
    fn times() {
        assert_eq!(parse_time_us("62.29us"), Some(62.29));
        assert_eq!(parse_time_us("1.50ms"), Some(1500.0));
        assert_eq!(parse_time_us("2.00s"), Some(2e6));
        assert_eq!(parse_time_us("1.00m"), Some(60e6));
        assert_eq!(parse_time_us("12"), None);
        assert_eq!(parse_time_us("xms"), None);
    }

    #[test]
    fn arguments() {
        let i = Invocation {
            threads: 1,
            connections: 1,
            seconds: 2,
            close: true,
            script: Some("/tmp/s.lua".into()),
            url: "http://198.18.0.10/obj/n1/s1024".into(),
        };
        assert_eq!(
            i.args(),
            [
                "-t1",
                "-c1",
                "-d2s",
                "--timeout",
                "10s",
                "--latency",
                "-H",
                "Connection: close",
                "-s",
                "/tmp/s.lua",
                "http://198.18.0.10/obj/n1/s1024"
            ]
        );
        let s = two_owner_script("/obj/n2/a", "/obj/n3/a");
        assert!(s.contains("\"/obj/n2/a\"") && s.contains("\"/obj/n3/a\""));
        let q = sequence_script(&["/obj/n2/a".into(), "/obj/n3/a".into()]);
        assert!(
            q.contains("local paths = {\"/obj/n2/a\", \"/obj/n3/a\"}"),
            "{q}"
        );
        assert!(q.contains("\"Connection\"] = \"close\""));
    }
}
