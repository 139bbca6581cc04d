//! `bridge-bench`: `ipc-bridge` against plain TCP between the same two
//! network namespaces (`ipc_tests::hosts`), in one run, reported as
//! Markdown with ratios. Needs root (it prints why it skips otherwise).
//! Run by `scripts/bench.sh --bridge`; `--quick` for a smoke run.
//!
//! * streaming 64 KiB messages: a bridged mailbox's throughput against
//!   one TCP stream (the receiver's time from the first to the last byte);
//! * 64 B messages: the bridged rate against a TCP sender doing one
//!   `write` per message;
//! * round trip of 64 B: p50 and p99, bridged (a mailbox each way) and
//!   TCP (`TCP_NODELAY`, echo).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipc_tests::hosts::Hosts;
use ipc_tests::ChildGuard;

const PORT: u16 = 7447;
const TCP_PORT: u16 = 7500;

fn exe(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.parent().expect("bin dir").join(name)
}

fn peer(hosts: &Hosts, i: usize, args: &[String]) -> Command {
    let mut c = hosts.command(i, exe("bridge-peer"));
    c.args(args);
    c
}

fn args(a: &[&dyn ToString]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// Runs to completion (bounded), returning stdout; exits on failure.
fn run(hosts: &Hosts, i: usize, a: Vec<String>) -> String {
    let mut c = peer(hosts, i, &a);
    c.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let out = ipc_tests::ChildGuard::new(c.spawn().expect("spawn"))
        .output_timeout(Duration::from_secs(300));
    if !out.status.success() {
        eprintln!(
            "bridge-bench: host {i}: bridge-peer {a:?} failed: {}",
            out.status
        );
        std::process::exit(1);
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts a peer whose first line must be "listening" (a TCP server).
fn listening(
    hosts: &Hosts,
    i: usize,
    a: Vec<String>,
) -> (ChildGuard, BufReader<std::process::ChildStdout>) {
    let mut c = peer(hosts, i, &a);
    c.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = hosts.spawn(i, &mut c);
    let mut out = BufReader::new(child.0.as_mut().unwrap().stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert_eq!(line.trim(), "listening", "tcp server");
    (child, out)
}

fn finish(mut child: ChildGuard, mut out: BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("result line");
    let st = child
        .wait_timeout(Duration::from_secs(300))
        .expect("server ends");
    assert!(st.success(), "tcp server failed: {st}");
    line
}

fn ns(s: &str) -> f64 {
    s.split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .expect("a number")
}

fn wait_connected(hosts: &Hosts, i: usize, name: &str) {
    let path = hosts
        .shm_dir(i)
        .join("ipc-bridge")
        .join(format!("{name}.status"));
    let start = Instant::now();
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains("link:           connected")
    {
        if start.elapsed() > Duration::from_secs(60) {
            eprintln!("bridge-bench: host {i}: {name} never connected");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let hosts = match Hosts::new(2) {
        Ok(h) => h,
        Err(skip) => {
            println!("## Across hosts (ipc-bridge)\n\nskipped: {}", skip.reason());
            eprintln!("bridge-bench: skipped: {}", skip.reason());
            return;
        }
    };
    let (n_big, n_small, n_rtt) = if quick {
        (500u32, 20_000u32, 300u32)
    } else {
        (4000, 200_000, 3000)
    };
    let big = 65536u32;
    for (host, name, cap, max) in [
        (0, "m64k", 64, big),
        (0, "m64", 1024, 64),
        (0, "ping", 64, 64),
        (1, "pong", 64, 64),
    ] {
        run(&hosts, host, args(&[&"create", &name, &cap, &max]));
    }
    let listen = format!("tcp/{}:{PORT}", hosts.addr(0));
    let mut a0 = hosts.command(0, exe("ipc-bridge"));
    a0.args([
        "--name", "h0", "--listen", &listen, "--export", "m64k", "--export", "m64", "--export",
        "ping", "--import", "pong",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _b0 = hosts.spawn(0, &mut a0);
    let mut a1 = hosts.command(1, exe("ipc-bridge"));
    a1.args([
        "--name",
        "h1",
        "--connect",
        &listen,
        "--import",
        "m64k",
        "--import",
        "m64",
        "--import",
        "ping",
        "--export",
        "pong",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _b1 = hosts.spawn(1, &mut a1);
    for (i, name) in [(1, "m64k"), (1, "m64"), (1, "ping"), (0, "pong")] {
        wait_connected(&hosts, i, name);
    }
    let addr = format!("{}:{TCP_PORT}", hosts.addr(0));

    // Streaming 64 KiB.
    let (srv, out) = listening(&hosts, 0, args(&[&"tcp-sink", &TCP_PORT, &n_big, &big]));
    run(&hosts, 1, args(&[&"tcp-send", &addr, &n_big, &big]));
    let tcp_big = ns(&finish(srv, out));
    let mut sink = peer(&hosts, 0, &args(&[&"mb-sink", &"m64k", &n_big]));
    sink.stdout(Stdio::piped());
    let sink = hosts.spawn(0, &mut sink);
    run(&hosts, 1, args(&[&"mb-send", &"m64k", &n_big, &big]));
    let bridged_big = ns(&String::from_utf8_lossy(
        &sink.output_timeout(Duration::from_secs(300)).stdout,
    ));
    let mb_s = |n: u32, len: u32, t: f64| f64::from(n) * f64::from(len) / t * 1e9 / 1e6;

    // 64 B messages.
    let (srv, out) = listening(&hosts, 0, args(&[&"tcp-sink", &TCP_PORT, &n_small, &64]));
    run(&hosts, 1, args(&[&"tcp-send", &addr, &n_small, &64]));
    let tcp_small = ns(&finish(srv, out));
    let mut sink = peer(&hosts, 0, &args(&[&"mb-sink", &"m64", &n_small]));
    sink.stdout(Stdio::piped());
    let sink = hosts.spawn(0, &mut sink);
    run(&hosts, 1, args(&[&"mb-send", &"m64", &n_small, &64]));
    let bridged_small = ns(&String::from_utf8_lossy(
        &sink.output_timeout(Duration::from_secs(300)).stdout,
    ));
    let rate = |n: u32, t: f64| f64::from(n) / t * 1e9;

    // Round trips.
    let (srv, out) = listening(&hosts, 0, args(&[&"tcp-echo", &TCP_PORT, &n_rtt, &64]));
    let tcp_rtt = run(&hosts, 1, args(&[&"tcp-ping", &addr, &n_rtt, &64]));
    let _ = finish_quiet(srv, out);
    let mut echo = peer(&hosts, 0, &args(&[&"mb-echo", &"ping", &"pong", &n_rtt]));
    let echo = hosts.spawn(0, &mut echo);
    let bridged_rtt = run(
        &hosts,
        1,
        args(&[&"mb-ping", &"ping", &"pong", &n_rtt, &64]),
    );
    let _ = echo.output_timeout(Duration::from_secs(60));
    let p = |s: &str| -> (f64, f64) {
        let mut it = s
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap_or(0.0));
        (
            it.next().unwrap_or(0.0) / 1e3,
            it.next().unwrap_or(0.0) / 1e3,
        )
    };
    let (tcp_p50, tcp_p99) = p(&tcp_rtt);
    let (br_p50, br_p99) = p(&bridged_rtt);

    println!("## Across hosts (ipc-bridge)\n");
    println!("Two network namespaces on a veth pair through a bridge (`ipc_tests::hosts`), same run; one bridge per host, plain TCP (no TLS).{}\n", if quick { " Quick run: small counts, not for the record." } else { "" });
    println!("| measure | ipc-bridge | TCP | ratio |");
    println!("|---|---:|---:|---:|");
    let (bb, tb) = (mb_s(n_big, big, bridged_big), mb_s(n_big, big, tcp_big));
    println!(
        "| 64 KiB messages, {n_big}: MB/s | {bb:.0} | {tb:.0} (one stream) | {:.2} |",
        bb / tb
    );
    let (bs, ts) = (rate(n_small, bridged_small), rate(n_small, tcp_small));
    println!(
        "| 64 B messages, {n_small}: msg/s | {bs:.0} | {ts:.0} (one write per message) | {:.2} |",
        bs / ts
    );
    println!(
        "| round trip 64 B, p50 µs | {br_p50:.1} | {tcp_p50:.1} (TCP_NODELAY echo) | {:.2} |",
        br_p50 / tcp_p50
    );
    println!(
        "| round trip 64 B, p99 µs | {br_p99:.1} | {tcp_p99:.1} | {:.2} |",
        br_p99 / tcp_p99
    );
}

fn finish_quiet(
    mut child: ChildGuard,
    _out: BufReader<std::process::ChildStdout>,
) -> Option<std::process::ExitStatus> {
    child.wait_timeout(Duration::from_secs(60))
}
