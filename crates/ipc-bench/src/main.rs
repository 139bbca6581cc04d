//! `ipc-bench`: ipc-core side by side with pipes, Unix sockets, POSIX
//! message queues, iceoryx2 (feature `iceoryx2`) and two physical-limit
//! probes, in one interleaved run; prints a Markdown report on stdout,
//! progress on stderr.
//!
//! Every contender is measured in rounds; within a round the contenders of
//! one (mode, size, measure) cell run back to back in an order that rotates
//! from round to round, so that machine noise hits all of them alike.
//! Throughput is the median of the rounds; latency histograms are merged.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod contenders;
mod harness;
mod memcpy;
mod report;
mod stream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use harness::{Contender, Measure, Mode};
use report::{Cell, Key, Results};

/// Benchmark ipc-core against pipes, Unix sockets, POSIX message queues,
/// iceoryx2 and bare cache-line / futex ping-pong, in separate processes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Smoke run (under a minute): one round, short runs, a 64 MiB stream.
    #[arg(long)]
    quick: bool,
    /// Interleaved rounds [default: 3, 1 with --quick].
    #[arg(long)]
    rounds: Option<u32>,
    /// Target seconds of one timed run [default: 0.5, 0.02 with --quick].
    #[arg(long)]
    run_time: Option<f64>,
    /// Message sizes in bytes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64,1024,65536,1048576")]
    sizes: Vec<usize>,
    /// Only contenders whose name contains one of these (comma separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Bytes streamed through `producer | consumer` [default: 1 GiB, 64 MiB with --quick].
    #[arg(long)]
    stream_size: Option<u64>,
    /// Skip the end-to-end stream benchmark.
    #[arg(long)]
    no_stream: bool,
    /// Where the `producer` and `consumer` binaries are [default: next to this one].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp(None)
        .init();
    let args = Args::parse();
    #[cfg(feature = "iceoryx2")]
    let iox_existed = contenders::iox::init();
    let result = run(&args);
    #[cfg(feature = "iceoryx2")]
    contenders::iox::cleanup(iox_existed);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if harness::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) => {
            eprintln!("ipc-bench: interrupted");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("ipc-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starting counts, before calibration: short for slow contenders.
fn first_count(measure: Measure, size: usize) -> u64 {
    match measure {
        Measure::Throughput => ((1u64 << 20) / size as u64).clamp(16, 2000),
        Measure::RoundTrip => ((4u64 << 20) / size as u64).clamp(20, 100),
    }
}

fn run_one(c: &dyn Contender, key: &Key, count: u64, timeout: Duration) -> Result<Cell> {
    let (_, measure, mode, size) = *key;
    Ok(match measure {
        Measure::Throughput => Cell::Rate(c.throughput(size, count, mode, timeout)?),
        Measure::RoundTrip => Cell::Latency(c.round_trip(size, count, mode, timeout)?),
    })
}

/// Messages per second a cell's result shows (for calibration).
fn speed(cell: &Cell) -> f64 {
    match cell {
        Cell::Rate(r) => r.per_sec(),
        Cell::Latency(h) => 1e9 / h.mean().max(1.0),
    }
}

fn run(args: &Args) -> Result<()> {
    harness::install_alarm_handler()?;
    contenders::mq::raise_limits();
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let run_time = args.run_time.unwrap_or(if args.quick { 0.02 } else { 0.5 });
    let stream_size = args
        .stream_size
        .unwrap_or(if args.quick { 64 << 20 } else { 1 << 30 });
    let timeout = Duration::from_secs_f64(30.0 + 20.0 * run_time);
    harness::set_time_box(Duration::from_secs_f64(run_time));
    let all: Vec<Box<dyn Contender>> = contenders::all()
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| c.name().contains(o.as_str())))
        .collect();
    let mut results = Results::new(
        all.iter().map(|c| c.name().to_owned()).collect(),
        args.sizes.clone(),
        rounds,
        run_time,
        std::env::args().collect::<Vec<_>>().join(" "),
    );
    let mut counts: HashMap<Key, u64> = HashMap::new();
    let started = std::time::Instant::now();

    for round in 0..rounds {
        log::info!("round {}/{rounds}", round + 1);
        for mode in Mode::ALL {
            for (si, &size) in args.sizes.iter().enumerate() {
                for measure in [Measure::Throughput, Measure::RoundTrip] {
                    let mut here: Vec<&dyn Contender> = all
                        .iter()
                        .map(|c| c.as_ref())
                        .filter(|c| c.applies(measure, size, mode))
                        .collect();
                    if here.is_empty() {
                        continue;
                    }
                    let shift = (round as usize + si) % here.len();
                    here.rotate_left(shift);
                    for c in here {
                        if harness::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
                            anyhow::bail!("interrupted");
                        }
                        let key: Key = (c.name().to_owned(), measure, mode, size);
                        if results.failed(&key) {
                            continue;
                        }
                        let count = match counts.get(&key) {
                            Some(&n) => n,
                            None => {
                                // Calibration run (also a warm-up), not
                                // recorded: sizes the timed runs.
                                let n0 = first_count(measure, size);
                                match run_one(c, &key, n0, timeout) {
                                    Ok(cell) => {
                                        // Four times the estimate: the time
                                        // box ends the run after `run_time`,
                                        // so runs are time-driven and a
                                        // pessimistic estimate cannot make
                                        // them short.
                                        let n = (speed(&cell) * run_time * 4.0) as u64;
                                        let n = match measure {
                                            Measure::Throughput => n.clamp(1000, 200_000_000),
                                            Measure::RoundTrip => n.clamp(200, 10_000_000),
                                        };
                                        counts.insert(key.clone(), n);
                                        n
                                    }
                                    Err(e) => {
                                        log::warn!(
                                            "{} {measure:?} {} {size} B: {e:#}",
                                            key.0,
                                            mode.label()
                                        );
                                        results.fail(key, format!("{e:#}"));
                                        continue;
                                    }
                                }
                            }
                        };
                        match run_one(c, &key, count, timeout) {
                            Ok(cell) => {
                                log::debug!(
                                    "{} {measure:?} {} {size} B: {}",
                                    key.0,
                                    mode.label(),
                                    cell.summary(size)
                                );
                                results.add(key, cell);
                            }
                            Err(e) => {
                                log::warn!(
                                    "{} {measure:?} {} {size} B: {e:#}",
                                    key.0,
                                    mode.label()
                                );
                                results.fail(key, format!("{e:#}"));
                            }
                        }
                    }
                }
                log::info!(
                    "  {} {size} B done ({:.0} s)",
                    mode.label(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }

    log::info!("memcpy");
    for &size in &args.sizes {
        results.memcpy.push(memcpy::measure(
            size,
            Duration::from_secs_f64((run_time * 0.5).max(0.02)),
        ));
    }

    if !args.no_stream {
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .context("locating this binary")?
                .parent()
                .context("binary has no directory")?
                .to_path_buf(),
        };
        log::info!(
            "stream: {} MiB through producer | consumer and cat | cat",
            stream_size >> 20
        );
        results.stream =
            Some(stream::run(&bin_dir, stream_size, rounds).map_err(|e| format!("{e:#}")));
    }
    results.elapsed = started.elapsed().as_secs_f64();
    print!("{}", results.markdown());
    Ok(())
}
