//! End-to-end stream benchmark: a file through the workspace's
//! `producer | consumer` command-line tools against `cat file | cat`,
//! both into /dev/null, interleaved; and the tools' own synthetic load
//! (`producer --count N --size 64` into `consumer --verify`), as a user
//! would type it: default geometry, general (shared) buffer.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Ring geometry given to `producer`.
pub const CAPACITY: u32 = 64;
/// Largest message given to `producer` (bytes per chunk of the stream).
pub const MAX_MESSAGE: u32 = 64 * 1024;

/// Bytes of each synthetic message.
pub const SYNTHETIC_SIZE: usize = 64;

/// Timings of one stream benchmark.
#[derive(Debug, Clone)]
pub struct StreamResult {
    /// File size.
    pub bytes: u64,
    /// Seconds for each `cat | cat` run.
    pub cat: Vec<f64>,
    /// Seconds for each `producer | consumer` run.
    pub ipc: Vec<f64>,
    /// Seconds for each pass of one process `read()`ing the file into a
    /// buffer the size of the producer's ring: the one copy any tool that
    /// reads its input must make, so the floor of `producer | consumer`.
    pub read_floor: Vec<f64>,
    /// Synthetic messages per run.
    pub synthetic_count: u64,
    /// Seconds for each synthetic run (from the producer's start to the
    /// verifying consumer's exit).
    pub synthetic: Vec<f64>,
}

/// A temporary file, removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A spawned process, killed and reaped by PID on drop unless waited for.
struct Proc(Option<std::process::Child>);

impl Proc {
    fn spawn(cmd: &mut Command) -> Result<Proc> {
        Ok(Proc(Some(
            cmd.spawn().with_context(|| format!("starting {cmd:?}"))?,
        )))
    }

    fn wait(&mut self, what: &str, deadline: Instant) -> Result<()> {
        let child = self.0.as_mut().expect("not yet waited for");
        loop {
            if let Some(status) = child.try_wait()? {
                self.0 = None;
                if !status.success() {
                    bail!("{what} ended with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what} did not finish in time");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.0.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Checks that `bin --help` runs and mentions every option we pass.
fn check_tool(bin: &Path, options: &[&str]) -> Result<()> {
    if !bin.is_file() {
        bail!(
            "{} not found (build the workspace with --release)",
            bin.display()
        );
    }
    let out = Command::new(bin)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    let help = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    for opt in options {
        if !help.contains(opt) {
            bail!(
                "{} --help does not offer {opt}: not the expected CLI yet",
                bin.display()
            );
        }
    }
    Ok(())
}

fn make_file(bytes: u64) -> Result<TempFile> {
    let path = std::env::temp_dir().join(format!("{}.dat", crate::harness::unique("stream")));
    let file = TempFile(path);
    let mut f = File::create(&file.0).with_context(|| format!("creating {}", file.0.display()))?;
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            // xorshift: cheap bytes that do not compress or repeat.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.sync_all().ok();
    Ok(file)
}

/// One pass of `read()`s of [`MAX_MESSAGE`] bytes over `file`, into a
/// buffer of [`CAPACITY`] such pieces taken in turn, as the producer's
/// ring is: the copy from the page cache that `producer` cannot avoid
/// (it reads stdin straight into the ring), with nothing else.
fn run_read_floor(file: &Path) -> Result<f64> {
    let piece = MAX_MESSAGE as usize;
    let mut ring = vec![0u8; piece * CAPACITY as usize];
    let mut f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let start = Instant::now();
    let mut total = 0u64;
    for at in (0..CAPACITY as usize).cycle() {
        let n = std::io::Read::read(&mut f, &mut ring[at * piece..][..piece])
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let expected = std::fs::metadata(file)?.len();
    if total != expected {
        bail!("read {total} bytes of {}'s {expected}", file.display());
    }
    Ok(secs)
}

fn run_cat(file: &Path, deadline: Instant) -> Result<f64> {
    let start = Instant::now();
    let mut first = Command::new("cat");
    first.arg(file).stdin(Stdio::null()).stdout(Stdio::piped());
    let mut a = Proc::spawn(&mut first)?;
    let pipe =
        a.0.as_mut()
            .and_then(|c| c.stdout.take())
            .context("cat's stdout")?;
    let mut second = Command::new("cat");
    second.stdin(pipe).stdout(Stdio::null());
    let mut b = Proc::spawn(&mut second)?;
    a.wait("cat file", deadline)?;
    b.wait("| cat", deadline)?;
    Ok(start.elapsed().as_secs_f64())
}

/// Runs `producer --segment NAME --create PRODUCER_ARGS` (fed `stdin`),
/// then, once it has created the segment, `consumer --segment NAME
/// CONSUMER_ARGS`; both must exit cleanly before `deadline`. Returns the
/// seconds from the producer's start to both exits, and the consumer's
/// summary (stderr). The segment is removed whatever happens.
fn run_pair(
    bin_dir: &Path,
    producer_args: &[&str],
    stdin: Stdio,
    consumer_args: &[&str],
    deadline: Instant,
) -> Result<(f64, String)> {
    let name = crate::harness::unique("stream");
    struct Unlink(String);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = ipc_core::SharedBuffer::unlink(&self.0);
        }
    }
    let _unlink = Unlink(name.clone());
    let start = Instant::now();
    let mut producer = Proc::spawn(
        Command::new(bin_dir.join("producer"))
            .args(["--segment", &name, "--create"])
            .args(producer_args)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let producer_log = producer.0.as_mut().and_then(|c| c.stderr.take());
    let shm = Path::new("/dev/shm").join(&name);
    while !shm.exists() {
        if producer.exited() || Instant::now() > deadline {
            producer.wait("producer", deadline)?;
            bail!("producer never created segment {name}");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut consumer = Proc::spawn(
        Command::new(bin_dir.join("consumer"))
            .args(["--segment", &name])
            .args(consumer_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let consumer_log = consumer.0.as_mut().and_then(|c| c.stderr.take());
    let waited = producer
        .wait("producer", deadline)
        .and_then(|()| consumer.wait("consumer", deadline));
    let secs = start.elapsed().as_secs_f64();
    // Both have exited (or are killed when dropped): their one-line
    // summaries are in the pipes.
    drop((producer, consumer));
    let producer_log = read_log(producer_log);
    let consumer_log = read_log(consumer_log);
    waited.with_context(|| {
        format!("producer said {producer_log:?}, consumer said {consumer_log:?}")
    })?;
    Ok((secs, consumer_log))
}

fn run_ipc(bin_dir: &Path, file: &Path, deadline: Instant) -> Result<f64> {
    let bytes = std::fs::metadata(file)?.len();
    let (capacity, max) = (CAPACITY.to_string(), MAX_MESSAGE.to_string());
    // One producer, one consumer: the single mode, whose producer reads
    // stdin straight into the ring.
    let producer = ["--single", "--capacity", &capacity, "--max-message", &max];
    let stdin = Stdio::from(File::open(file)?);
    let (secs, consumer_log) = run_pair(bin_dir, &producer, stdin, &[], deadline)?;
    // The consumer's summary ("N messages, B bytes in ...") proves the
    // whole file went through, not just that both exited cleanly.
    let got = consumer_log
        .split_once(" bytes in ")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .and_then(|b| b.parse::<u64>().ok());
    if got != Some(bytes) {
        bail!("consumer received {got:?} bytes of {bytes}: it said {consumer_log:?}");
    }
    Ok(secs)
}

/// `count` self-checking messages of [`SYNTHETIC_SIZE`] bytes from
/// `producer --count` into `consumer --verify`, which must report every
/// one received and nothing corrupt, reordered or duplicated.
fn run_synthetic(bin_dir: &Path, count: u64, deadline: Instant) -> Result<f64> {
    let (count, size) = (count.to_string(), SYNTHETIC_SIZE.to_string());
    let producer = ["--count", &count, "--size", &size];
    let consumer = ["--verify", "--count", &count];
    let (secs, consumer_log) = run_pair(bin_dir, &producer, Stdio::null(), &consumer, deadline)?;
    // The verifier's summary proves every message arrived intact.
    let clean = format!("received={count} corrupt=0 out_of_order=0 duplicate=0 producers=1");
    if !consumer_log.contains(&clean) {
        bail!("the verifying consumer did not report {clean:?}: it said {consumer_log:?}");
    }
    Ok(secs)
}

/// What a child wrote on stderr (after it exited), trimmed.
fn read_log(pipe: Option<std::process::ChildStderr>) -> String {
    let mut text = String::new();
    if let Some(mut p) = pipe {
        let _ = std::io::Read::read_to_string(&mut p, &mut text);
    }
    text.trim().to_owned()
}

/// Runs `rounds` of each, alternating, on a file of `bytes` bytes.
pub fn run(bin_dir: &Path, bytes: u64, rounds: u32) -> Result<StreamResult> {
    check_tool(
        &bin_dir.join("producer"),
        &[
            "--segment",
            "--create",
            "--single",
            "--capacity",
            "--max-message",
            "--count",
            "--size",
        ],
    )?;
    check_tool(
        &bin_dir.join("consumer"),
        &["--segment", "--verify", "--count"],
    )?;
    let file = make_file(bytes)?;
    let timeout = Duration::from_secs(30) + Duration::from_secs(bytes >> 27);
    // Page the file in once.
    run_cat(&file.0, Instant::now() + timeout)?;
    // About as many messages as the file has 128-byte pieces.
    let synthetic_count = (bytes >> 7).max(100_000);
    let mut r = StreamResult {
        bytes,
        cat: Vec::new(),
        ipc: Vec::new(),
        read_floor: Vec::new(),
        synthetic_count,
        synthetic: Vec::new(),
    };
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for ipc in order {
            let deadline = Instant::now() + timeout;
            if ipc {
                r.ipc.push(run_ipc(bin_dir, &file.0, deadline)?);
            } else {
                r.cat.push(run_cat(&file.0, deadline)?);
            }
        }
        r.read_floor.push(run_read_floor(&file.0)?);
        let deadline = Instant::now() + timeout;
        r.synthetic
            .push(run_synthetic(bin_dir, synthetic_count, deadline)?);
        log::info!(
            "stream round {}: cat {:.3} s, ipc {:.3} s, read floor {:.3} s, synthetic {:.3} s",
            round + 1,
            r.cat[round as usize],
            r.ipc[round as usize],
            r.read_floor[round as usize],
            r.synthetic[round as usize]
        );
    }
    Ok(r)
}
