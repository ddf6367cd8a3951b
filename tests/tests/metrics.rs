//! `--metrics`: what a scrape shows against what the stream showed, checked by Prometheus's own
//! `promtool`, and scraped by a real Prometheus server (Debian's), all on loopback.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nstrace_tests::{Tracer, assert_root, by};
use serde_json::Value;

/// A loopback port free now.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// One HTTP GET: (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// A sample's value in Prometheus text (`name{labels} value`), by its name and labels as written.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `unshare -u true`, `n` times: their pids.
fn unshares(n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let mut child = Command::new("unshare")
                .args(["-u", "true"])
                .spawn()
                .expect("unshare");
            let pid = child.id();
            assert!(child.wait().expect("wait").success());
            pid
        })
        .collect()
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_scrape_counts_what_the_stream_showed_and_passes_promtool() {
    assert_root();
    let addr = free_addr();
    let tracer = Tracer::start(&["--metrics", &addr.to_string(), "--no-summary"]);
    let (status, _) = get(addr, "/readyz");
    assert!(status.contains(" 200 "), "ready once tracing: {status}");
    let pids = unshares(5);
    for &pid in &pids {
        tracer.wait_for("the unshare", by(pid, "unshare"));
    }
    let shown = tracer
        .events(|e| e["type"] == "transition" && e["call"] == "unshare")
        .len();
    // Published every quarter second.
    std::thread::sleep(Duration::from_millis(600));
    let (status, text) = get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    let counted = sample(&text, "nstrace_transitions_total{call=\"unshare\"}")
        .unwrap_or_else(|| panic!("no unshare count in\n{text}"));
    assert!(
        counted >= shown as f64 && shown >= pids.len(),
        "{counted} unshares counted, {shown} shown (ours: {pids:?})"
    );
    let records = sample(&text, "nstrace_records_total").expect("records");
    assert!(records >= counted, "{text}");
    assert_eq!(
        sample(&text, "nstrace_lost_records_total{cpu=\"0\"}"),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "nstrace_tracked_tasks").is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "nstrace_tracked_namespaces").is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "nstrace_drain_lag_seconds").is_some(),
        "{text}"
    );
    assert!(text.contains("nstrace_build_info{kernel=\""), "{text}");
    let (status, _) = get(addr, "/healthz");
    assert!(status.contains(" 200 "), "{status}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tracer.stop();
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn an_address_already_taken_is_refused_before_tracing() {
    assert_root();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(nstrace_tests::binary("nstrace"))
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("--metrics {addr}: cannot listen there")) && !err.contains("tracing"),
        "{err}"
    );
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Scraping `target` every second.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("nstrace-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - \
                 job_name: nstrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's prometheus package)");
        Prometheus { child, addr, dir }
    }

    /// The value of an instant query's first series, when there is one.
    fn query(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = get(self.addr, &format!("/api/v1/query?query={encoded}"));
        if !status.contains(" 200 ") {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(self.addr).is_ok()
                && let Some(v) = self.query(query)
                && ok(v)
            {
                return v;
            }
            assert!(
                Instant::now() < until,
                "prometheus: {query} never came; its log:\n{}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
#[ignore = "needs root: cargo xtask test runs it"]
fn a_real_prometheus_scrapes_the_counts() {
    assert_root();
    let addr = free_addr();
    let tracer = Tracer::start(&["--metrics", &addr.to_string(), "--no-summary"]);
    let prometheus = Prometheus::start(addr);
    prometheus.wait_for("up{job=\"nstrace\"}", |v| v == 1.0);
    let before = prometheus
        .query("nstrace_transitions_total{call=\"unshare\"}")
        .unwrap_or(0.0);
    let pids = unshares(3);
    for &pid in &pids {
        tracer.wait_for("the unshare", by(pid, "unshare"));
    }
    let after = prometheus.wait_for("nstrace_transitions_total{call=\"unshare\"}", |v| {
        v >= before + pids.len() as f64
    });
    assert!(after >= before + 3.0);
    prometheus.wait_for("nstrace_build_info", |v| v == 1.0);
    drop(prometheus);
    tracer.stop();
}
