//! Several "hosts" on one machine, for tests of programs that talk over
//! TCP between machines (the coming `ipc-bridge`).
//!
//! Each host is a Linux network namespace with its own IPC namespace,
//! mount namespace and private tmpfs on `/dev/shm`, so two hosts can reach
//! each other only over the network, never through shared memory by
//! accident. The hosts are plugged into a private switch: one more
//! network namespace holding a Linux bridge, with one veth pair per host
//! (the host's end is its interface, the switch's end is its port). Host
//! `i` has the address `192.0.2.(i+1)/24` and `lo` up. Segmentation offload
//! is off on the veths (`gso_max_segs 1`): every packet is one frame of at
//! most the MTU, so loss and rate limits act on frames as on a wire.
//!
//! ```text
//!   host 0 (netns, ipc, mnt)      switch (netns)       host 1 (netns, ipc, mnt)
//!   192.0.2.1 <tag>h0 ==veth== <tag>p0 -[<tag>br]- <tag>p1 ==veth== <tag>h1 192.0.2.2
//! ```
//!
//! Every link is created directly inside the switch's and the hosts'
//! namespaces (`ip -n SWITCH link add ... peer ... netns HOST`), so none
//! ever appears in the machine's own namespace; link names still carry the
//! instance's tag (pid and counter) so that a leak would be recognizable.
//!
//! A long-lived *holder* process per host (`ip netns exec HOST unshare
//! --ipc --mount --propagation private bash -c 'mount -t tmpfs ...
//! /dev/shm; read'`) owns the host's IPC and mount namespaces; commands
//! enter a host with `nsenter --target HOLDER --net --ipc --mount`, which
//! execs the program without forking, so the PID of the spawned child is
//! the program's own.
//!
//! Needs root (with `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`) and the tools
//! `ip`, `nsenter`, `unshare`, `mount` and `bash`; [`Hosts::new`] returns a
//! [`Skip`] saying what is missing otherwise, which a test prints
//! (`skipped: <reason>`) before returning, see [`or_skip`]. Packet loss
//! needs `iptables`, rate limits `tc`.
//!
//! Dropping [`Hosts`] (also while unwinding from a panic) kills, by PID,
//! the children started with [`Hosts::spawn`] (through pidfds taken when
//! they started), the holders, and every process still inside the
//! instance's network namespaces (found through `/proc/PID/ns/net`), then
//! deletes the namespaces, which removes the bridge and the veth pairs. A test
//! process killed before it could drop its `Hosts` leaves namespaces
//! behind; the next [`Hosts::new`] on the machine removes those whose
//! creating process is gone.
//!
//! ```no_run
//! use ipc_tests::hosts::{or_skip, Hosts};
//! let Some(hosts) = or_skip(Hosts::new(2)) else { return };
//! let mut c = hosts.command(1, "bash");
//! c.args(["-c", "echo hi"]);
//! let out = ipc_tests::run(c, ipc_tests::PATIENCE);
//! assert!(out.status.success());
//! println!("host 0 is at {}", hosts.addr(0));
//! ```

use crate::ChildGuard;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Prefix of every network namespace name this module creates.
const NETNS_PREFIX: &str = "ipctn-";

/// Bound for one `ip`, `tc` or `iptables` run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// Bound for a state change to show (a holder ready, a link up or down).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most hosts in one instance (addresses 192.0.2.1 to 192.0.2.9; the
/// interface names stay within 15 characters).
pub const MAX_HOSTS: usize = 9;

/// Size of each host's private `/dev/shm`.
const SHM_SIZE: &str = "64m";

/// Why the hosts cannot be set up here (not root, a tool missing): the
/// test that wanted them prints it with [`Skip::print`] and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl Skip {
    /// The reason.
    pub fn reason(&self) -> &str {
        &self.0
    }

    /// Prints `skipped: <reason>` to stderr.
    pub fn print(&self) {
        eprintln!("skipped: {}", self.0);
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

/// The value, or `None` after printing the skip's reason: for
/// `let Some(hosts) = or_skip(Hosts::new(2)) else { return };`.
pub fn or_skip<T>(r: Result<T, Skip>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(skip) => {
            skip.print();
            None
        }
    }
}

/// Full path of `name` on `PATH` or in the usual system folders (a
/// non-root `PATH` often lacks the `sbin` ones).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `Ok(path)` of a tool, or the skip saying it is missing.
fn need_tool(name: &str, what: &str) -> Result<PathBuf, Skip> {
    find_tool(name).ok_or_else(|| Skip(format!("{name} is not installed ({what})")))
}

/// Whether this process has the effective capabilities `bits`.
fn has_caps(bits: &[u32]) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    bits.iter().all(|b| eff & (1u64 << b) != 0)
}

/// Runs `cmd` (stdin closed, output captured) to completion within
/// `timeout`; kills it (its own PID, not yet reaped) if it takes longer.
/// Never panics, so that it can run in `Drop`.
fn exec(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().map_err(|e| format!("{desc}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    for (which, pipe) in [
        (
            0,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            1,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send((which, buf));
        });
    }
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(format!("{desc}: wait: {e}")),
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{desc}: did not finish within {timeout:?}, killed"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // The pipes reach end of file when the program exits (unless it left
    // a child holding them: then take what came within a second).
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((0, b)) => stdout = b,
            Ok((_, b)) => stderr = b,
            Err(_) => break,
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// [`exec`], and an error unless the program exited with status 0.
fn exec_ok(cmd: Command) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    let out = exec(cmd, TOOL_TIMEOUT)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{desc}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Inode of the network namespace at `path` (`/run/netns/NAME` or
/// `/proc/PID/ns/net`).
fn ns_inode(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// PIDs of the processes whose network namespace is one of `inodes`.
fn pids_in(inodes: &[u64]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            ns_inode(format!("/proc/{pid}/ns/net")).is_some_and(|ino| inodes.contains(&ino))
        })
        .collect()
}

/// A pidfd for `pid` (`None` if it is gone).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) with a PID and no flags; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a fresh fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process of a pidfd has ended (its pidfd polls readable).
fn pidfd_ended(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd, without waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// SIGKILL to the process of a pidfd (nothing if it has ended).
fn pidfd_kill(fd: &OwnedFd) {
    // SAFETY: pidfd_send_signal(2) on our own pidfd, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Sends SIGKILL to `pid` if it is (still) inside one of `inodes`: the
/// check and the signal go through a pidfd, so a PID reused meanwhile by
/// another process is never signalled.
fn kill_if_inside(pid: i32, inodes: &[u64]) {
    let Some(fd) = pidfd(pid) else {
        return; // gone already
    };
    // The pidfd pins which process `pid` names now: if that one is inside,
    // it is the one signalled (or it died meanwhile and nothing is).
    if ns_inode(format!("/proc/{pid}/ns/net")).is_some_and(|ino| inodes.contains(&ino)) {
        pidfd_kill(&fd);
    }
}

/// Kills every process inside the network namespaces `inodes` and waits
/// (at most 200 rounds of 10 ms) until none is left; returns how many
/// remain (0 normally).
fn sweep(inodes: &[u64]) -> usize {
    let mut left = 0;
    for _ in 0..200 {
        let pids = pids_in(inodes);
        left = pids.len();
        if left == 0 {
            return 0;
        }
        for pid in pids {
            kill_if_inside(pid, inodes);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    left
}

/// An exclusive lock on a machine-wide file, held around `ip netns add`
/// and `del`: the first `ip netns add` on a machine turns `/run/netns`
/// into a mount point, and two doing it at once can stack two mounts,
/// hiding the namespaces created under the first.
struct NetnsLock(File);

impl NetnsLock {
    /// Takes the lock, waiting at most [`TOOL_TIMEOUT`].
    fn take() -> Result<NetnsLock, String> {
        let path = "/run/ipc-tests-netns.lock";
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("{path}: {e}"))?;
        let start = Instant::now();
        loop {
            // SAFETY: flock(2) on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(NetnsLock(f));
            }
            if start.elapsed() >= TOOL_TIMEOUT {
                return Err(format!("{path}: still locked after {TOOL_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NetnsLock {
    fn drop(&mut self) {
        // SAFETY: flock(2) on an fd we own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Whether process `pid` exists (in this PID namespace).
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// One host: its namespace, its cable and its holder.
#[derive(Debug)]
struct Host {
    /// Network namespace name (under /run/netns).
    netns: String,
    /// The host's end of its veth pair (in the host's namespace).
    iface: String,
    /// The switch's end (in the switch's namespace, on the bridge).
    port: String,
    /// The holder of the host's IPC and mount namespaces.
    holder: ChildGuard,
    /// Its PID, the target of `nsenter`.
    holder_pid: u32,
    /// Packets dropped by loss rules already removed.
    dropped_before: AtomicU64,
    /// Whether a loss rule is in place.
    lossy: AtomicBool,
}

/// Tools found when the hosts were made.
#[derive(Debug)]
struct Tools {
    ip: PathBuf,
    nsenter: PathBuf,
    unshare: PathBuf,
    bash: PathBuf,
}

/// `n` hosts on a private switch; see the [module docs](self). Removed,
/// with everything running inside, on drop.
#[derive(Debug)]
pub struct Hosts {
    /// Names of the namespaces created so far (switch first).
    netns: Vec<String>,
    /// Their network namespace inodes.
    inodes: Vec<u64>,
    /// The switch's namespace.
    switch: String,
    /// Every link created (bridge, ports, host interfaces).
    links: Vec<String>,
    hosts: Vec<Host>,
    tools: Tools,
    /// Pidfds of the children started with [`Hosts::spawn`] (those not
    /// known to have ended), signalled on drop: a pidfd names one process
    /// for good, so a reused PID is never hit.
    spawned: Mutex<Vec<OwnedFd>>,
}

impl Hosts {
    /// Makes `n` hosts (1 to [`MAX_HOSTS`]; tests use 2 or 3) on a fresh
    /// switch, each with its address, `lo` up and its private `/dev/shm`,
    /// and waits until every host's interface is up.
    ///
    /// Returns [`Skip`] when this process is not root (or lacks
    /// `CAP_SYS_ADMIN`/`CAP_NET_ADMIN`) or a tool is missing. Panics if the
    /// setup fails otherwise (after removing what it had made).
    pub fn new(n: usize) -> Result<Hosts, Skip> {
        assert!(
            (1..=MAX_HOSTS).contains(&n),
            "Hosts::new({n}): 1 to {MAX_HOSTS} hosts"
        );
        // SAFETY: geteuid(2) has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(Skip(format!(
                "not root (euid {euid}): network, IPC and mount namespaces need root"
            )));
        }
        if !has_caps(&[12, 21]) {
            return Err(Skip(
                "root lacks CAP_NET_ADMIN or CAP_SYS_ADMIN (an unprivileged container?)".into(),
            ));
        }
        let tools = Tools {
            ip: need_tool("ip", "iproute2")?,
            nsenter: need_tool("nsenter", "util-linux")?,
            unshare: need_tool("unshare", "util-linux")?,
            bash: need_tool("bash", "bash")?,
        };
        need_tool("mount", "mount")?;

        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        remove_stale(&tools.ip);

        let base = format!("{NETNS_PREFIX}{pid}-{count}");
        // Link names: IFNAMSIZ is 16 with the NUL, so at most 15 bytes.
        let tag = format!("i{pid:x}x{count}");
        let link_name = |role: &str| {
            let name = format!("{tag}{role}");
            assert!(name.len() <= 15, "link name {name} is longer than 15 bytes");
            name
        };
        let mut me = Hosts {
            netns: Vec::new(),
            inodes: Vec::new(),
            switch: format!("{base}-sw"),
            links: Vec::new(),
            hosts: Vec::new(),
            tools,
            spawned: Mutex::new(Vec::new()),
        };
        // From here on a panic drops `me`, which removes what was made.
        let switch = me.switch.clone();
        me.add_netns(&switch);
        let bridge = link_name("br");
        me.links.push(bridge.clone());
        me.ip_n(
            &switch,
            &["link", "add", &bridge, "type", "bridge", "stp_state", "0"],
        );
        me.ip_n(&switch, &["link", "set", &bridge, "up"]);
        for i in 0..n {
            let netns = format!("{base}-h{i}");
            me.add_netns(&netns);
            let port = link_name(&format!("p{i}"));
            let iface = link_name(&format!("h{i}"));
            me.links.push(port.clone());
            me.links.push(iface.clone());
            me.ip_n(
                &switch,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", &iface, "netns", &netns,
                ],
            );
            // One frame per packet, as on a real cable: without this a veth
            // carries 64 KiB GSO packets, and a loss rule or a rate limit
            // would see a few big packets instead of many small ones.
            me.ip_n(&switch, &["link", "set", &port, "gso_max_segs", "1"]);
            me.ip_n(&netns, &["link", "set", &iface, "gso_max_segs", "1"]);
            me.ip_n(&switch, &["link", "set", &port, "master", &bridge, "up"]);
            let addr = format!("{}/24", Hosts::addr_of(i));
            me.ip_n(&netns, &["addr", "add", &addr, "dev", &iface]);
            me.ip_n(&netns, &["link", "set", &iface, "up"]);
            me.ip_n(&netns, &["link", "set", "lo", "up"]);
            let holder = me.start_holder(&netns);
            let holder_pid = holder.pid();
            me.hosts.push(Host {
                netns,
                iface,
                port,
                holder,
                holder_pid,
                dropped_before: AtomicU64::new(0),
                lossy: AtomicBool::new(false),
            });
            me.wait_holder(i);
        }
        for i in 0..n {
            me.wait_operstate(i, true);
        }
        Ok(me)
    }

    /// Creates network namespace `name` and records it (and its inode)
    /// for removal.
    fn add_netns(&mut self, name: &str) {
        self.netns.push(name.to_owned());
        let lock = NetnsLock::take().unwrap_or_else(|e| panic!("Hosts: {e}"));
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "add", name]);
        exec_ok(c).unwrap_or_else(|e| panic!("Hosts: {e}"));
        drop(lock);
        let ino = ns_inode(format!("/run/netns/{name}"))
            .unwrap_or_else(|| panic!("Hosts: /run/netns/{name} missing after ip netns add"));
        self.inodes.push(ino);
    }

    /// Runs `ip -n NETNS ARGS...`; panics on failure.
    fn ip_n(&self, netns: &str, args: &[&str]) -> Output {
        let mut c = Command::new(&self.tools.ip);
        c.args(["-n", netns]).args(args);
        exec_ok(c).unwrap_or_else(|e| panic!("Hosts: {e}"))
    }

    /// Starts the holder of host `netns`: it enters the network
    /// namespace, makes new IPC and mount namespaces, mounts a tmpfs on
    /// /dev/shm and waits for its stdin to close (it ends with this
    /// process even if this process is killed).
    fn start_holder(&self, netns: &str) -> ChildGuard {
        let script = format!(
            "mount -t tmpfs -o size={SHM_SIZE},mode=1777 ipct-shm /dev/shm || exit 1; read -r _; exit 0"
        );
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "exec", netns])
            .arg(&self.tools.unshare)
            .args(["--ipc", "--mount", "--propagation", "private"])
            .arg(&self.tools.bash)
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        ChildGuard::new(
            c.spawn()
                .unwrap_or_else(|e| panic!("Hosts: spawn the holder of {netns}: {e}")),
        )
    }

    /// Waits until host `i`'s holder has its own IPC namespace and its
    /// tmpfs on /dev/shm (`ip netns exec` and `unshare` exec, so the
    /// holder's PID is bash's).
    fn wait_holder(&mut self, i: usize) {
        let my_ipc = ns_inode("/proc/self/ns/ipc");
        let my_shm = std::fs::metadata("/dev/shm").map(|m| m.dev()).ok();
        let start = Instant::now();
        loop {
            let h = &mut self.hosts[i];
            let pid = h.holder_pid;
            if let Some(st) = h
                .holder
                .0
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("Hosts: the holder of host {i} ({}) exited: {st}", h.netns);
            }
            let ipc = ns_inode(format!("/proc/{pid}/ns/ipc"));
            let shm = std::fs::metadata(format!("/proc/{pid}/root/dev/shm"))
                .map(|m| m.dev())
                .ok();
            if ipc.is_some() && ipc != my_ipc && shm.is_some() && shm != my_shm {
                return;
            }
            assert!(
                start.elapsed() < SETTLE_TIMEOUT,
                "Hosts: the holder of host {i} not ready within {SETTLE_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Host `i`'s interface state as the host sees it (`up`, `down`,
    /// `lowerlayerdown`...), from its own /sys.
    fn operstate(&self, i: usize) -> String {
        let h = &self.hosts[i];
        std::fs::read_to_string(format!(
            "/proc/{}/root/sys/class/net/{}/operstate",
            h.holder_pid, h.iface
        ))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
    }

    /// Waits until host `i`'s interface is up (`up`) or not (`!up`).
    fn wait_operstate(&self, i: usize, up: bool) {
        let start = Instant::now();
        while (self.operstate(i) == "up") != up {
            assert!(
                start.elapsed() < SETTLE_TIMEOUT,
                "Hosts: host {i}'s interface still {:?} after {SETTLE_TIMEOUT:?}",
                self.operstate(i)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn addr_of(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, i as u8 + 1)
    }

    fn host(&self, i: usize) -> &Host {
        assert!(i < self.hosts.len(), "host {i} of {}", self.hosts.len());
        &self.hosts[i]
    }

    /// How many hosts there are.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Always false (there is at least one host); for clippy's
    /// `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `i`'s address, `192.0.2.(i+1)`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.host(i);
        Hosts::addr_of(i)
    }

    /// A command running `program` inside host `i` (its network, IPC and
    /// mount namespaces) through `nsenter`, which execs it: the child's
    /// PID is the program's. Add arguments, environment and stdio as to
    /// any command. It starts in `/` of the host's mount namespace (a copy
    /// of the machine's, but for /dev/shm and /sys), so give paths in
    /// full. Run it with [`crate::run`] or [`Hosts::spawn`].
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(&self.tools.nsenter);
        c.arg(format!("--target={}", self.host(i).holder_pid))
            .args(["--net", "--ipc", "--mount", "--"])
            .arg(program);
        c
    }

    /// Spawns `cmd`, which must come from [`Hosts::command`]`(i, ...)`,
    /// and returns it guarded: killed by its PID when the guard drops, and
    /// also when these hosts drop. Panics if it does not start.
    pub fn spawn(&self, i: usize, cmd: &mut Command) -> ChildGuard {
        let target = format!("--target={}", self.host(i).holder_pid);
        assert!(
            cmd.get_program() == self.tools.nsenter.as_os_str()
                && cmd.get_args().next() == Some(OsStr::new(&target)),
            "Hosts::spawn({i}, ..): build the command with Hosts::command({i}, ..)"
        );
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("Hosts::spawn({i}): {cmd:?}: {e}"));
        // The child is not reaped yet, so its PID is still its own.
        if let Some(fd) = pidfd(child.id() as i32) {
            let mut spawned = self.spawned.lock().unwrap_or_else(|e| e.into_inner());
            spawned.retain(|fd| !pidfd_ended(fd));
            spawned.push(fd);
        }
        ChildGuard::new(child)
    }

    /// Plugs host `i`'s cable in (`up`) or pulls it out: sets its port on
    /// the switch up or down, so the host's interface loses its carrier
    /// (it keeps its address; packets it sends are lost, as on a real
    /// unplugged cable). Returns once the host sees the change.
    pub fn link(&self, i: usize, up: bool) {
        let h = self.host(i);
        self.ip_n(
            &self.switch,
            &["link", "set", &h.port, if up { "up" } else { "down" }],
        );
        self.wait_operstate(i, up);
    }

    /// Drops each packet arriving at host `i` (its INPUT chain, all
    /// protocols over IPv4) with `probability` (0 to 1), replacing an
    /// earlier loss rule. The chain belongs to these hosts: nothing else
    /// is in it. [`Skip`] if `iptables` is not installed.
    pub fn loss(&self, i: usize, probability: f64) -> Result<(), Skip> {
        assert!(
            (0.0..=1.0).contains(&probability),
            "loss probability {probability} is not between 0 and 1"
        );
        let iptables = need_tool("iptables", "needed for packet loss")?;
        self.clear_loss(i);
        let p = format!("{probability:.6}");
        self.iptables(
            i,
            &iptables,
            &[
                "-A",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        );
        self.host(i).lossy.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Removes host `i`'s loss rule, if any (its count is kept in
    /// [`Hosts::dropped`]).
    pub fn clear_loss(&self, i: usize) {
        let h = self.host(i);
        if !h.lossy.load(Ordering::Relaxed) {
            return;
        }
        let iptables = find_tool("iptables").expect("iptables was there for the rule");
        let now = self.rule_drops(i, &iptables);
        self.iptables(i, &iptables, &["-F", "INPUT"]);
        h.dropped_before.fetch_add(now, Ordering::Relaxed);
        h.lossy.store(false, Ordering::Relaxed);
    }

    /// Packets host `i`'s loss rules have dropped since these hosts were
    /// made (0 if it never had one).
    pub fn dropped(&self, i: usize) -> u64 {
        let h = self.host(i);
        let before = h.dropped_before.load(Ordering::Relaxed);
        if !h.lossy.load(Ordering::Relaxed) {
            return before;
        }
        let iptables = find_tool("iptables").expect("iptables was there for the rule");
        before + self.rule_drops(i, &iptables)
    }

    /// The packet counts of the DROP rules in host `i`'s INPUT chain,
    /// from `iptables -L INPUT -v -n -x`.
    fn rule_drops(&self, i: usize, iptables: &Path) -> u64 {
        let out = self.iptables(i, iptables, &["-L", "INPUT", "-v", "-n", "-x"]);
        // Chain INPUT (policy ACCEPT 12 packets, 900 bytes)
        //     pkts      bytes target     prot opt in     out     source ...
        //       17      25160 DROP       0    --  *      *       0.0.0.0/0 ...
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let pkts = f.next()?.parse::<u64>().ok()?;
                let _bytes = f.next()?;
                (f.next()? == "DROP").then_some(pkts)
            })
            .sum()
    }

    /// Runs `iptables -w 5 ARGS` inside host `i`'s network namespace;
    /// panics on failure.
    fn iptables(&self, i: usize, iptables: &Path, args: &[&str]) -> Output {
        let mut c = Command::new(&self.tools.nsenter);
        c.arg(format!("--target={}", self.host(i).holder_pid))
            .args(["--net", "--"])
            .arg(iptables)
            .args(["-w", "5"])
            .args(args);
        exec_ok(c).unwrap_or_else(|e| panic!("Hosts: {e}"))
    }

    /// Limits host `i`'s traffic to `rate` (in `tc` units: `10mbit`,
    /// `500kbit`) both ways: a `tbf` qdisc on the host's interface (what
    /// it sends) and on its switch port (what it receives). Replaces an
    /// earlier limit. [`Skip`] if `tc` is not installed.
    pub fn rate_limit(&self, i: usize, rate: &str) -> Result<(), Skip> {
        let tc = need_tool("tc", "iproute2, needed for rate limits")?;
        let h = self.host(i);
        for (netns, dev) in [(&h.netns, &h.iface), (&self.switch, &h.port)] {
            let mut c = Command::new(&tc);
            c.args(["-n", netns, "qdisc", "replace", "dev", dev, "root", "tbf"])
                .args(["rate", rate, "burst", "16kb", "latency", "100ms"]);
            exec_ok(c).unwrap_or_else(|e| panic!("Hosts::rate_limit({i}, {rate:?}): {e}"));
        }
        Ok(())
    }

    /// Removes host `i`'s rate limit, if any.
    pub fn clear_rate_limit(&self, i: usize) {
        let Some(tc) = find_tool("tc") else { return };
        let h = self.host(i);
        for (netns, dev) in [(&h.netns, &h.iface), (&self.switch, &h.port)] {
            let mut c = Command::new(&tc);
            c.args(["-n", netns, "qdisc", "del", "dev", dev, "root"]);
            // Fails when there is no limit: nothing to remove.
            let _ = exec(c, TOOL_TIMEOUT);
        }
    }

    /// Host `i`'s private /dev/shm, as a path this process can read and
    /// write (through the holder's root, `/proc/PID/root/dev/shm`).
    pub fn shm_dir(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/dev/shm", self.host(i).holder_pid))
    }

    /// The names in host `i`'s private /dev/shm, sorted.
    pub fn shm_files(&self, i: usize) -> Vec<String> {
        let dir = self.shm_dir(i);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The names of the network namespaces (under `/run/netns`) of this
    /// instance: the switch's, then the hosts'.
    pub fn namespaces(&self) -> Vec<String> {
        self.netns.clone()
    }

    /// The names of the links of this instance: the bridge, then each
    /// host's switch port and interface.
    pub fn links(&self) -> Vec<String> {
        self.links.clone()
    }

    /// PIDs of the processes inside this instance's network namespaces
    /// (holders included).
    pub fn processes(&self) -> Vec<i32> {
        pids_in(&self.inodes)
    }
}

/// PIDs of the processes inside the network namespaces with these inodes
/// (as `stat` gives them for `/proc/PID/ns/net` or `/run/netns/NAME`).
/// Exact only while those namespaces are held (by their [`Hosts`], or an
/// open file of `/run/netns/NAME`): the kernel gives a freed namespace's
/// inode number to the next new one.
pub fn processes_in(inodes: &[u64]) -> Vec<i32> {
    pids_in(inodes)
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // The children started with `spawn`, through their pidfds: one
        // may still be in nsenter, not yet inside the namespaces, where the
        // sweep below would miss it.
        for fd in self
            .spawned
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            pidfd_kill(&fd);
        }
        // The holders first: they are our children, reaped here (a bounded
        // wait: a process killed with SIGKILL ends promptly, unless stuck
        // in the kernel, and then it is left to init).
        for h in &mut self.hosts {
            if let Some(mut c) = h.holder.0.take() {
                let _ = c.kill();
                for _ in 0..500 {
                    if !matches!(c.try_wait(), Ok(None)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        // The children started with `spawn`, and whatever else runs in the
        // namespaces (their own children, programs run with `command`):
        // killed by PID, each found through its /proc/PID/ns/net.
        let left = sweep(&self.inodes);
        if left > 0 {
            eprintln!(
                "Hosts: {left} process(es) still inside {:?} after 2 s of SIGKILL",
                self.netns
            );
        }
        // Deleting a namespace with nobody inside destroys it, and with it
        // its links (a veth pair goes when either end does).
        let lock = NetnsLock::take();
        for name in self.netns.iter().rev() {
            let mut c = Command::new(&self.tools.ip);
            c.args(["netns", "del", name]);
            if let Err(e) = exec_ok(c) {
                eprintln!("Hosts: {e}");
            }
        }
        drop(lock);
    }
}

/// Removes namespaces left by test processes that died before dropping
/// their [`Hosts`] (SIGKILL, a timeout): named `ipctn-PID-...` with PID
/// no longer running.
fn remove_stale(ip: &Path) {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    let me = std::process::id() as i32;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || alive(pid) {
            continue;
        }
        if let Some(ino) = ns_inode(e.path()) {
            sweep(&[ino]);
        }
        let Ok(lock) = NetnsLock::take() else { return };
        let mut c = Command::new(ip);
        c.args(["netns", "del", &name]);
        // Another process may be removing it too.
        if exec_ok(c).is_ok() {
            eprintln!("Hosts: removed {name}, left by process {pid}, gone");
        }
        drop(lock);
    }
}
