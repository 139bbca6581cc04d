//! Tests of the multi-host harness (`ipc_tests::hosts`): private /dev/shm
//! per host, TCP between hosts over the private switch, cables pulled and
//! plugged back, random packet loss, rate limits, and nothing left behind.
//!
//! They need root; elsewhere each prints `skipped: <reason>` and passes.
//! The TCP peers are this test binary re-executed inside a host (role in
//! `HOSTS_HARNESS_ROLE`), so nothing beyond bash and iproute2 is needed.

use ipc_tests::hosts::{or_skip, processes_in, Hosts};
use ipc_tests::{run, wait_until, ChildGuard, ShmName, SplitMix, PATIENCE};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The port the server role listens on (each host has its own network
/// namespace, so a fixed port never collides).
const PORT: u16 = 7000;

/// Exit status of the client role when it cannot connect.
const UNREACHABLE: i32 = 3;

/// FNV-1a, 64 bits: the checksum the server returns for what it received.
fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// `len` bytes drawn from `seed`, in blocks of 8.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut g = SplitMix(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&g.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Child roles, run by re-executing this test binary inside a host:
///
/// * `server`: listens on 0.0.0.0:PORT, prints `listening`; for each
///   connection reads to end of file and answers `LEN HASH`.
/// * `abandon`: makes 2 hosts, starts a `sleep` inside host 1, prints
///   `made NETNS...` and sleeps until killed (by the test, with SIGKILL,
///   so that nothing is dropped).
/// * `client`: connects (`HOSTS_HARNESS_CONNECT_S` seconds at most) to
///   `HOSTS_HARNESS_ADDR`:PORT, sends
///   `HOSTS_HARNESS_LEN` bytes drawn from `HOSTS_HARNESS_SEED`, shuts down
///   its writing half, and checks the answer: prints `ok LEN HASH` and
///   exits 0, or exits UNREACHABLE when it cannot connect, 1 on any other
///   failure.
#[test]
fn hosts_harness_child() {
    let Ok(role) = std::env::var("HOSTS_HARNESS_ROLE") else {
        return;
    };
    // SAFETY: prctl with constant arguments: die with the parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    match role.as_str() {
        "server" => serve(),
        "client" => std::process::exit(client_role()),
        "abandon" => abandon(),
        other => panic!("unknown role {other}"),
    }
}

fn abandon() -> ! {
    let Some(hosts) = or_skip(Hosts::new(2)) else {
        std::process::exit(0);
    };
    let mut c = hosts.command(1, "sleep");
    c.arg("600");
    std::mem::forget(hosts.spawn(1, &mut c));
    println!("\nmade {}", hosts.namespaces().join(" "));
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn serve() -> ! {
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind");
    println!("listening");
    std::io::stdout().flush().unwrap();
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut h = FNV_START;
            let mut len = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        fnv1a(&mut h, &buf[..k]);
                        len += k as u64;
                    }
                    Err(_) => return,
                }
            }
            let _ = writeln!(s, "{len} {h:016x}");
        });
    }
    unreachable!("incoming() never ends")
}

fn client_role() -> i32 {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} unset"));
    let addr: Ipv4Addr = var("HOSTS_HARNESS_ADDR").parse().unwrap();
    let len: usize = var("HOSTS_HARNESS_LEN").parse().unwrap();
    let seed: u64 = var("HOSTS_HARNESS_SEED").parse().unwrap();
    let connect = Duration::from_secs(var("HOSTS_HARNESS_CONNECT_S").parse().unwrap());
    let data = payload(seed, len);
    let mut h = FNV_START;
    fnv1a(&mut h, &data);
    let want = format!("{len} {h:016x}");
    let mut s = match TcpStream::connect_timeout(&SocketAddr::from((addr, PORT)), connect) {
        Ok(s) => s,
        Err(e) => {
            println!("unreachable: {e}");
            return UNREACHABLE;
        }
    };
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = String::new();
    let r = s
        .write_all(&data)
        .and_then(|_| s.shutdown(Shutdown::Write))
        .and_then(|_| s.read_to_string(&mut answer));
    match r {
        Ok(_) if answer.trim() == want => {
            // On a line of its own (libtest printed "test ... " before).
            println!("\nok {want}");
            0
        }
        Ok(_) => {
            println!("corrupt: sent {want}, server got {:?}", answer.trim());
            1
        }
        Err(e) => {
            println!("failed: {e}");
            1
        }
    }
}

/// This test binary, re-executed inside host `i` in `role`.
fn child(hosts: &Hosts, i: usize, role: &str) -> Command {
    let mut c = hosts.command(i, std::env::current_exe().unwrap());
    c.args([
        "hosts_harness_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("HOSTS_HARNESS_ROLE", role);
    c
}

/// Starts the server role in host `i` and waits until it listens.
fn server(hosts: &Hosts, i: usize) -> ChildGuard {
    let mut c = child(hosts, i, "server");
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut guard = hosts.spawn(i, &mut c);
    let out = BufReader::new(guard.0.as_mut().unwrap().stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut said = false;
        for line in out.lines() {
            let Ok(line) = line else { break };
            if !said && line.trim_end().ends_with("listening") {
                said = true;
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(PATIENCE)
        .expect("the server did not say it listens");
    guard
}

/// How a client run ended.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    /// The bytes crossed and the server's checksum matched.
    Ok,
    /// Could not connect in time.
    Unreachable,
}

/// Sends `len` bytes from host `from` to the server on host `to`, giving
/// up connecting after 1 s; panics on anything but a checked delivery or a
/// failed connect.
fn send(hosts: &Hosts, from: usize, to: usize, len: usize) -> Reach {
    send_within(hosts, from, to, len, 1)
}

/// [`send`], trying to connect for `connect_s` seconds (under loss, a lost
/// SYN or SYN-ACK is sent again after 1 s, then 2 s, 4 s...).
fn send_within(hosts: &Hosts, from: usize, to: usize, len: usize, connect_s: u64) -> Reach {
    let mut c = child(hosts, from, "client");
    c.env("HOSTS_HARNESS_ADDR", hosts.addr(to).to_string())
        .env("HOSTS_HARNESS_LEN", len.to_string())
        .env("HOSTS_HARNESS_SEED", (from * 100 + to).to_string())
        .env("HOSTS_HARNESS_CONNECT_S", connect_s.to_string());
    let out = run(c, PATIENCE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) if stdout.lines().any(|l| l.starts_with("ok ")) => Reach::Ok,
        Some(UNREACHABLE) => Reach::Unreachable,
        _ => panic!(
            "client {from} -> {to}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs `bash -c SCRIPT` inside host `i`; its exit status.
fn bash_in(hosts: &Hosts, i: usize, script: &str) -> bool {
    let mut c = hosts.command(i, "bash");
    c.args(["-c", script]);
    let out = run(c, PATIENCE);
    if !out.status.success() {
        eprintln!(
            "host {i}: bash -c {script:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

#[test]
fn a_file_in_one_hosts_dev_shm_is_not_in_anothers_nor_the_machines() {
    let Some(hosts) = or_skip(Hosts::new(2)) else {
        return;
    };
    let name = ShmName::new("hosts-shm");
    assert!(bash_in(&hosts, 0, &format!("echo here > /dev/shm/{name}")));
    assert!(
        hosts.shm_files(0).contains(&name.0),
        "{:?}",
        hosts.shm_files(0)
    );
    assert_eq!(
        std::fs::read_to_string(hosts.shm_dir(0).join(name.as_str())).unwrap(),
        "here\n"
    );
    assert!(
        !hosts.shm_files(1).contains(&name.0),
        "{:?}",
        hosts.shm_files(1)
    );
    assert!(bash_in(&hosts, 1, &format!("test ! -e /dev/shm/{name}")));
    assert!(
        !name.path().exists(),
        "{} is in the machine's /dev/shm",
        name.path().display()
    );
    // And the other way: the machine's files are not in the hosts'.
    std::fs::write(name.path(), b"machine").unwrap();
    assert!(bash_in(&hosts, 1, &format!("test ! -e /dev/shm/{name}")));
    assert!(bash_in(
        &hosts,
        0,
        &format!("grep -qx here /dev/shm/{name}")
    ));
}

#[test]
fn tcp_crosses_the_switch_and_stops_while_the_cable_is_out() {
    let Some(hosts) = or_skip(Hosts::new(3)) else {
        return;
    };
    let _server = server(&hosts, 0);
    assert_eq!(send(&hosts, 1, 0, 4096), Reach::Ok);
    assert_eq!(send(&hosts, 2, 0, 4096), Reach::Ok);

    hosts.link(1, false);
    for _ in 0..2 {
        assert_eq!(send(&hosts, 1, 0, 4096), Reach::Unreachable);
    }
    assert_eq!(send(&hosts, 2, 0, 4096), Reach::Ok, "host 2's cable is in");

    hosts.link(1, true);
    let start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        if send(&hosts, 1, 0, 4096) == Reach::Ok {
            break;
        }
        assert!(
            tries < 20,
            "host 1 still cannot reach host 0 after {tries} tries"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "host 1 reached host 0 again {:?} after the cable went back in ({tries} tries)",
        start.elapsed()
    );
}

#[test]
fn bytes_cross_intact_through_random_packet_loss() {
    let Some(hosts) = or_skip(Hosts::new(2)) else {
        return;
    };
    if or_skip(hosts.loss(0, 0.05)).is_none() {
        return;
    }
    let _server = server(&hosts, 0);
    let start = Instant::now();
    assert_eq!(send_within(&hosts, 1, 0, 512 * 1024, 30), Reach::Ok);
    let dropped = hosts.dropped(0);
    eprintln!(
        "512 KiB crossed 5% loss in {:?}; host 0 dropped {dropped} packets",
        start.elapsed()
    );
    assert!(dropped > 0, "the loss rule dropped nothing");
    hosts.clear_loss(0);
    assert_eq!(hosts.dropped(0), dropped, "the count survives clear_loss");
    assert_eq!(send(&hosts, 1, 0, 64 * 1024), Reach::Ok);
    assert_eq!(hosts.dropped(0), dropped, "no rule, no drops");
}

#[test]
fn a_rate_limit_slows_a_transfer_down() {
    let Some(hosts) = or_skip(Hosts::new(2)) else {
        return;
    };
    if or_skip(hosts.rate_limit(1, "2mbit")).is_none() {
        return;
    }
    let _server = server(&hosts, 0);
    let start = Instant::now();
    assert_eq!(send(&hosts, 1, 0, 256 * 1024), Reach::Ok);
    let took = start.elapsed();
    eprintln!("256 KiB at 2mbit took {took:?}");
    // 256 KiB less the 16 KiB burst at 2 Mbit/s is about 1 s: a lower
    // bound, which load cannot break.
    assert!(
        took >= Duration::from_millis(500),
        "256 KiB at 2mbit in {took:?}"
    );
    hosts.clear_rate_limit(1);
}

#[test]
fn nothing_of_the_hosts_is_left_after_drop() {
    let Some(hosts) = or_skip(Hosts::new(2)) else {
        return;
    };
    let namespaces = hosts.namespaces();
    let links = hosts.links();
    let pinned = Pinned::new(&hosts.namespaces());
    assert_eq!(namespaces.len(), 3);
    assert_eq!(links.len(), 5);
    // Something running inside each host when the hosts go.
    let _server = server(&hosts, 0);
    let mut c = hosts.command(1, "bash");
    c.args(["-c", "sleep 600 & sleep 600; wait"]);
    let sleeper = hosts.spawn(1, &mut c);
    let sleeper_pid = sleeper.pid();
    std::mem::forget(sleeper); // only the hosts' drop may end it
                               // 2 holders, the server, bash and its 2 sleeps (once nsenter entered).
    wait_until("6 processes inside the hosts", || {
        hosts.processes().len() >= 6
    });
    let listed = ip(&["netns", "list"]);
    for ns in &namespaces {
        assert!(
            listed.contains(ns.as_str()),
            "{ns} not in ip netns list: {listed}"
        );
    }
    drop(hosts);

    let listed = ip(&["netns", "list"]);
    let root_links = ip(&["-o", "link"]);
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "{ns} left: {listed}");
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "{ns}"
        );
    }
    for l in &links {
        assert!(
            !root_links.contains(l.as_str()),
            "link {l} left: {root_links}"
        );
    }
    assert_eq!(
        pinned.processes(),
        Vec::<i32>::new(),
        "processes left inside"
    );
    // The sleeper was killed (a zombie, ours to reap, or reaped).
    let mut reaped = false;
    for _ in 0..500 {
        let mut status = 0;
        // SAFETY: waitpid on our own child, without blocking.
        let r = unsafe { libc::waitpid(sleeper_pid as i32, &mut status, libc::WNOHANG) };
        if r == sleeper_pid as i32 {
            reaped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(reaped, "the sleeper still runs");
}

/// `ip ARGS` on the machine, its stdout.
fn ip(args: &[&str]) -> String {
    let mut c = Command::new("ip");
    c.args(args);
    let out = run(c, PATIENCE);
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_panic_with_the_hosts_up_still_removes_them() {
    let Some(hosts) = or_skip(Hosts::new(2)) else {
        return;
    };
    let namespaces = hosts.namespaces();
    let pinned = Pinned::new(&hosts.namespaces());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _server = server(&hosts, 0);
        let _hosts = hosts;
        panic!("a test failing with its hosts up");
    }));
    assert!(r.is_err());
    let listed = ip(&["netns", "list"]);
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "{ns} left: {listed}");
    }
    assert_eq!(
        pinned.processes(),
        Vec::<i32>::new(),
        "processes left inside"
    );
}

#[test]
fn hosts_left_by_a_killed_test_process_are_removed_by_the_next() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root");
        return;
    }
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "hosts_harness_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("HOSTS_HARNESS_ROLE", "abandon")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut abandoner = ChildGuard::new(c.spawn().unwrap());
    let out = BufReader::new(abandoner.0.as_mut().unwrap().stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            if let Some(names) = line.strip_prefix("made ") {
                let _ = tx.send(names.to_owned());
            }
        }
    });
    let Ok(names) = rx.recv_timeout(PATIENCE) else {
        // It skipped (its reason is in stderr) or failed.
        let st = abandoner.wait_timeout(PATIENCE);
        assert!(
            st.is_some_and(|s| s.success()),
            "the abandoning child: {st:?}"
        );
        return;
    };
    let names: Vec<String> = names.split_whitespace().map(str::to_owned).collect();
    let pinned = Pinned::new(&names);
    // The sleep, once its nsenter has entered host 1 and exec'd it.
    let sleeping = || {
        pinned.processes().iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
    };
    wait_until("the abandoned sleep inside host 1", sleeping);
    abandoner.kill(); // SIGKILL: its Hosts is never dropped
    assert!(sleeping(), "the sleep runs on");
    // The next Hosts on the machine removes them (or a parallel test's
    // did already).
    let Some(next) = or_skip(Hosts::new(1)) else {
        return;
    };
    let listed = ip(&["netns", "list"]);
    for ns in &names {
        assert!(!listed.contains(ns.as_str()), "{ns} left: {listed}");
    }
    assert_eq!(
        pinned.processes(),
        Vec::<i32>::new(),
        "processes left inside"
    );
    drop(next);
}

/// Network namespaces held open by their files: while held they live on
/// (nameless once deleted) and their inode numbers cannot be given to new
/// namespaces (a parallel test's), so looking for processes inside them
/// by inode is exact. Closed on drop, which lets the kernel free them.
struct Pinned {
    /// Kept open: what holds the namespaces.
    _files: Vec<File>,
    inodes: Vec<u64>,
}

impl Pinned {
    fn new(names: &[String]) -> Pinned {
        let files: Vec<File> = names
            .iter()
            .map(|n| File::open(format!("/run/netns/{n}")).unwrap())
            .collect();
        let inodes = files.iter().map(|f| f.metadata().unwrap().ino()).collect();
        Pinned {
            _files: files,
            inodes,
        }
    }

    /// PIDs of the processes inside.
    fn processes(&self) -> Vec<i32> {
        processes_in(&self.inodes)
    }
}
