//! Results and the Markdown report: absolute figures, ratios of ipc-core
//! to every other contender, the memcpy ceiling, the stream benchmark, the
//! machine, and the project's targets checked against this run.

use std::collections::HashMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::contenders::ipc::{deep_budget, DEEP_FROM};
use crate::contenders::{
    CACHE_LINE, FUTEX, IOX, IOX_IN_PLACE, IPC, IPC_4X4, IPC_DEEP, IPC_IN_PLACE, IPC_MPMC,
    MB_BOUNDED, MB_UNBOUNDED, MB_ZERO, MQ, PIPE, UDS,
};
use crate::harness::{
    default_ring_messages, depth_for, new_histogram, Measure, Mode, Rate, IN_PLACE_FROM,
};
use crate::memcpy::Memcpy;
use crate::stream::StreamResult;

/// A key of the measurement table: contender, measure, mode, size.
pub type Key = (String, Measure, Mode, usize);

/// The outcome of one timed run.
#[derive(Debug)]
pub enum Cell {
    /// Throughput.
    Rate(Rate),
    /// Round-trip times, nanoseconds.
    Latency(Histogram<u64>),
}

impl Cell {
    /// One line for the progress log.
    pub fn summary(&self, size: usize) -> String {
        match self {
            Cell::Rate(r) => format!(
                "{} msg/s, {:.2} GB/s",
                si(r.per_sec()),
                r.per_sec() * size as f64 / 1e9
            ),
            Cell::Latency(h) => format!("p50 {}", us(h.value_at_quantile(0.5))),
        }
    }
}

/// Everything one invocation measured.
#[derive(Debug)]
pub struct Results {
    names: Vec<String>,
    sizes: Vec<usize>,
    rounds: u32,
    run_time: f64,
    command: String,
    rates: HashMap<Key, Vec<Rate>>,
    lats: HashMap<Key, Histogram<u64>>,
    failures: HashMap<Key, String>,
    /// memcpy ceiling per size.
    pub memcpy: Vec<Memcpy>,
    /// Stream benchmark, or why it did not run.
    pub stream: Option<Result<StreamResult, String>>,
    /// Wall-clock seconds of the whole run.
    pub elapsed: f64,
}

/// `1234567.0` → `1.23 M`.
fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Nanoseconds as microseconds, 3 significant digits.
fn us(ns: u64) -> String {
    let u = ns as f64 / 1e3;
    if u < 10.0 {
        format!("{u:.2}")
    } else if u < 100.0 {
        format!("{u:.1}")
    } else {
        format!("{u:.0}")
    }
}

fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size & ((1 << 20) - 1) == 0 {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size & ((1 << 10) - 1) == 0 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    }
}

fn median(v: &[Rate]) -> Option<f64> {
    let mut r: Vec<f64> = v.iter().map(Rate::per_sec).collect();
    r.sort_by(f64::total_cmp);
    let n = r.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(r[n / 2]),
        _ => Some((r[n / 2 - 1] + r[n / 2]) / 2.0),
    }
}

/// Median synthetic messages per second of a stream benchmark.
fn synthetic_rate(s: &StreamResult) -> f64 {
    s.synthetic_count as f64 / median_f(&s.synthetic)
}

fn median_f(v: &[f64]) -> f64 {
    let mut r = v.to_vec();
    r.sort_by(f64::total_cmp);
    let n = r.len();
    if n % 2 == 1 {
        r[n / 2]
    } else {
        (r[n / 2 - 1] + r[n / 2]) / 2.0
    }
}

/// The machine: CPUs, CPU model, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "nproc {nproc}, CPU \"{model}\", Linux {}; load average at the end {}",
        kernel.trim(),
        load.join(" ")
    )
}

/// Today's date, UTC, as YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    // Civil from days (H. Hinnant's algorithm).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Results {
    /// An empty result set.
    pub fn new(
        names: Vec<String>,
        sizes: Vec<usize>,
        rounds: u32,
        run_time: f64,
        command: String,
    ) -> Results {
        Results {
            names,
            sizes,
            rounds,
            run_time,
            command,
            rates: HashMap::new(),
            lats: HashMap::new(),
            failures: HashMap::new(),
            memcpy: Vec::new(),
            stream: None,
            elapsed: 0.0,
        }
    }

    /// True if this cell failed before (it is not tried again).
    pub fn failed(&self, key: &Key) -> bool {
        self.failures.contains_key(key)
    }

    /// Records a failure.
    pub fn fail(&mut self, key: Key, why: String) {
        self.failures.insert(key, why);
    }

    /// Records one run.
    pub fn add(&mut self, key: Key, cell: Cell) {
        match cell {
            Cell::Rate(r) => self.rates.entry(key).or_default().push(r),
            Cell::Latency(h) => {
                let merged = self.lats.entry(key).or_insert_with(new_histogram);
                // Both histograms have the same bounds: adding cannot fail.
                let _ = merged.add(&h);
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Median messages/s.
    fn rate(&self, name: &str, mode: Mode, size: usize) -> Option<f64> {
        median(
            self.rates
                .get(&(name.to_owned(), Measure::Throughput, mode, size))?,
        )
    }

    fn lat(&self, name: &str, mode: Mode, size: usize) -> Option<&Histogram<u64>> {
        self.lats
            .get(&(name.to_owned(), Measure::RoundTrip, mode, size))
    }

    fn p50(&self, name: &str, mode: Mode, size: usize) -> Option<f64> {
        self.quantile(name, mode, size, 0.5)
    }

    fn quantile(&self, name: &str, mode: Mode, size: usize, q: f64) -> Option<f64> {
        self.lat(name, mode, size)
            .map(|h| h.value_at_quantile(q) as f64)
    }

    fn na(&self, name: &str, measure: Measure, mode: Mode, size: usize) -> String {
        if self
            .failures
            .contains_key(&(name.to_owned(), measure, mode, size))
        {
            "failed†".to_owned()
        } else {
            "–".to_owned()
        }
    }

    fn probe(mode: Mode) -> &'static str {
        match mode {
            Mode::Spin => CACHE_LINE,
            Mode::Sleep => FUTEX,
        }
    }

    /// Writes a Markdown table: one row per size, one column per header,
    /// `cell` filling each.
    fn table(
        &self,
        out: &mut String,
        title: &str,
        heads: &[String],
        cell: &dyn Fn(usize, usize) -> String,
    ) {
        let _ = writeln!(out, "\n{title}\n");
        let _ = writeln!(out, "| size | {} |", heads.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(heads.len()));
        for &size in &self.sizes {
            let cells: Vec<String> = (0..heads.len()).map(|i| cell(i, size)).collect();
            let _ = writeln!(out, "| {} | {} |", size_label(size), cells.join(" | "));
        }
    }

    /// The contenders of this run among `names`.
    fn present<'a>(&self, names: &[&'a str]) -> Vec<&'a str> {
        names.iter().copied().filter(|n| self.has(n)).collect()
    }

    fn throughput_tables(&self, out: &mut String, mode: Mode) {
        let cols = self.present(&[
            IPC,
            IPC_IN_PLACE,
            IPC_DEEP,
            IPC_MPMC,
            IPC_4X4,
            MB_BOUNDED,
            MB_ZERO,
            MB_UNBOUNDED,
            PIPE,
            UDS,
            MQ,
            IOX,
            IOX_IN_PLACE,
        ]);
        let heads: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
        self.table(
            out,
            &format!(
                "### Throughput, {} (messages/s · GB/s, median of rounds)",
                mode.label()
            ),
            &heads,
            &|i, size| match self.rate(cols[i], mode, size) {
                Some(r) => format!("{} · {:.2}", si(r), r * size as f64 / 1e9),
                None => self.na(cols[i], Measure::Throughput, mode, size),
            },
        );
        // Ratios: the SPSC buffer (the 1→1 fast path) against the others,
        // then 4×4 against both 1→1 buffers.
        let mut pairs: Vec<(&str, &str)> = self
            .present(&[IPC_DEEP, IPC_MPMC, MB_BOUNDED, PIPE, UDS, MQ, IOX])
            .into_iter()
            .map(|o| (IPC, o))
            .collect();
        if self.has(IPC_4X4) {
            pairs.extend(
                self.present(&[IPC, IPC_MPMC])
                    .into_iter()
                    .map(|o| (IPC_4X4, o)),
            );
        }
        if self.has(IPC_IN_PLACE) && self.has(IOX_IN_PLACE) {
            pairs.push((IPC_IN_PLACE, IOX_IN_PLACE));
        }
        if !self.has(IPC) || pairs.is_empty() {
            return;
        }
        let heads: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} / {b}")).collect();
        self.table(
            out,
            &format!(
                "Ratios of the rates, {} (higher is better for the first):",
                mode.label()
            ),
            &heads,
            &|i, size| {
                let (a, b) = pairs[i];
                ratio(self.rate(a, mode, size), self.rate(b, mode, size))
            },
        );
    }

    fn latency_tables(&self, out: &mut String, mode: Mode) {
        let probe = Self::probe(mode);
        let cols = self.present(&[
            IPC,
            IPC_IN_PLACE,
            IPC_DEEP,
            IPC_MPMC,
            MB_BOUNDED,
            MB_ZERO,
            MB_UNBOUNDED,
            PIPE,
            UDS,
            MQ,
            IOX,
            IOX_IN_PLACE,
            probe,
        ]);
        let heads: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
        self.table(
            out,
            &format!("### Round trip, {} (p50 / p99 / p99.9 in µs)", mode.label()),
            &heads,
            &|i, size| match self.lat(cols[i], mode, size) {
                Some(h) => format!(
                    "{} / {} / {}",
                    us(h.value_at_quantile(0.5)),
                    us(h.value_at_quantile(0.99)),
                    us(h.value_at_quantile(0.999))
                ),
                None => self.na(cols[i], Measure::RoundTrip, mode, size),
            },
        );
        let others = self.present(&[
            IPC_DEEP, IPC_MPMC, MB_BOUNDED, MB_ZERO, PIPE, UDS, MQ, IOX, probe,
        ]);
        if !self.has(IPC) || others.is_empty() {
            return;
        }
        let heads: Vec<String> = others.iter().map(|o| format!("{IPC} / {o}")).collect();
        self.table(
            out,
            &format!(
                "Ratios of p50, {} (lower is better for {IPC}):",
                mode.label()
            ),
            &heads,
            &|i, size| ratio(self.p50(IPC, mode, size), self.p50(others[i], mode, size)),
        );
        if self.has(IPC_IN_PLACE) && self.has(IOX_IN_PLACE) {
            self.table(
                out,
                &format!(
                    "Receiving in place, ratio of p50, {} (lower is better for {IPC_IN_PLACE}):",
                    mode.label()
                ),
                &[format!("{IPC_IN_PLACE} / {IOX_IN_PLACE}")],
                &|_, size| {
                    ratio(
                        self.p50(IPC_IN_PLACE, mode, size),
                        self.p50(IOX_IN_PLACE, mode, size),
                    )
                },
            );
        }
    }
    fn memcpy_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n### memcpy ceiling (one core) and {IPC} 1→1 against it\n\n\
             \"hot\" copies one buffer again and again; \"ring-sized\" copies through as many \
             buffers as the ipc-core ring of that size holds.\n"
        );
        let _ = writeln!(
            out,
            "| size | memcpy hot GB/s | memcpy ring-sized GB/s | ipc spinning GB/s | % hot | % ring-sized | ipc sleeping GB/s | % hot | % ring-sized |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for m in &self.memcpy {
            let _ = write!(
                out,
                "| {} | {:.2} | {:.2} |",
                size_label(m.size),
                m.hot / 1e9,
                m.ring / 1e9
            );
            for mode in Mode::ALL {
                match self.rate(IPC, mode, m.size) {
                    Some(r) => {
                        let bw = r * m.size as f64;
                        let _ = write!(
                            out,
                            " {:.2} | {:.0}% | {:.0}% |",
                            bw / 1e9,
                            100.0 * bw / m.hot,
                            100.0 * bw / m.ring
                        );
                    }
                    None => out.push_str(" – | – | – |"),
                }
            }
            out.push('\n');
        }
    }

    fn stream_table(&self, out: &mut String) {
        let _ = writeln!(out, "\n### End-to-end stream: a file through `producer | consumer` vs `cat file | cat`, to /dev/null\n");
        match &self.stream {
            None => {
                let _ = writeln!(out, "Not run (`--no-stream`).");
            }
            Some(Err(why)) => {
                let _ = writeln!(out, "Not measured: {why}");
            }
            Some(Ok(s)) => {
                let cat = median_f(&s.cat);
                let ipc = median_f(&s.ipc);
                let gb = s.bytes as f64 / 1e9;
                let _ = writeln!(
                    out,
                    "File: {} MiB, page-cached; producer `--capacity {} --max-message {}`; median of {} runs each.\n",
                    s.bytes >> 20,
                    crate::stream::CAPACITY,
                    crate::stream::MAX_MESSAGE,
                    s.cat.len()
                );
                let _ = writeln!(out, "| pipeline | time (s) | GB/s |\n|---|---|---|");
                let _ = writeln!(out, "| `cat file \\| cat` | {cat:.3} | {:.2} |", gb / cat);
                let _ = writeln!(
                    out,
                    "| `producer \\| consumer` | {ipc:.3} | {:.2} |",
                    gb / ipc
                );
                let floor = median_f(&s.read_floor);
                let _ = writeln!(
                    out,
                    "| one process `read()`ing the file into a ring-sized buffer (the producer's floor) | {floor:.3} | {:.2} |",
                    gb / floor
                );
                let _ = writeln!(
                    out,
                    "\nipc-core CLI is {:.2}× as fast as `cat | cat`, and takes {:.2}× the time of the bare `read()` pass: no tool that reads the file could be more than {:.2}× as fast as `cat | cat` here.",
                    cat / ipc,
                    ipc / floor,
                    cat / floor
                );
                let _ = writeln!(
                    out,
                    "\nSynthetic load: `producer --create --count {n} --size {size}` into `consumer --verify --count {n}` (default geometry, general buffer; every message verified), median of {runs} runs: {:.3} s, {:.2} M msg/s (from the producer's start to the consumer's exit).",
                    median_f(&s.synthetic),
                    synthetic_rate(s) / 1e6,
                    n = s.synthetic_count,
                    size = crate::stream::SYNTHETIC_SIZE,
                    runs = s.synthetic.len(),
                );
            }
        }
    }

    fn targets(&self, out: &mut String) {
        let _ = writeln!(out, "\n### Targets (issue 10's, ratios from this run)\n");
        let _ = writeln!(out, "| target | measured | met? |\n|---|---|---|");
        let mut row = |what: String,
                       measured: Option<f64>,
                       fmt: &dyn Fn(f64) -> String,
                       ok: &dyn Fn(f64) -> bool| {
            let (m, met) = match measured {
                Some(v) => (fmt(v), if ok(v) { "yes" } else { "**no**" }),
                None => ("not measured".to_owned(), "–"),
            };
            let _ = writeln!(out, "| {what} | {m} | {met} |");
        };
        let x = |v: f64| format!("{v:.2}×");
        let pct = |v: f64| format!("{:.0}%", 100.0 * v);
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        for mode in Mode::ALL {
            let l = mode.label();
            for (size, times) in [(64, 20.0), (8, 30.0)] {
                let ipc = self.rate(IPC, mode, size);
                row(
                    format!("{size} B 1→1 rate ≥ {times}× pipe ({l})"),
                    div(ipc, self.rate(PIPE, mode, size)),
                    &x,
                    &move |v| v >= times,
                );
                row(
                    format!("{size} B 1→1 rate ≥ 100× POSIX mq ({l})"),
                    div(ipc, self.rate(MQ, mode, size)),
                    &x,
                    &|v| v >= 100.0,
                );
            }
            row(
                format!("general (MPMC) buffer 1→1 at 64 B ≥ 10× pipe ({l})"),
                div(self.rate(IPC_MPMC, mode, 64), self.rate(PIPE, mode, 64)),
                &x,
                &|v| v >= 10.0,
            );
            row(
                format!("unbounded mailbox at 64 KiB ≥ 50% of the bounded one ({l})"),
                div(
                    self.rate(MB_UNBOUNDED, mode, 65536),
                    self.rate(MB_BOUNDED, mode, 65536),
                ),
                &pct,
                &|v| v >= 0.5,
            );
        }
        for size in [8, 64] {
            row(
                format!("{size} B round trip spinning ≤ 1.5× cache-line probe (p50)"),
                div(
                    self.p50(IPC, Mode::Spin, size),
                    self.p50(CACHE_LINE, Mode::Spin, size),
                ),
                &x,
                &|v| v <= 1.5,
            );
            row(
                format!("{size} B round trip sleeping ≤ 1.2× futex probe (p50)"),
                div(
                    self.p50(IPC, Mode::Sleep, size),
                    self.p50(FUTEX, Mode::Sleep, size),
                ),
                &x,
                &|v| v <= 1.2,
            );
        }
        let mib = 1 << 20;
        if let Some(m) = self.memcpy.iter().find(|m| m.size == mib) {
            for mode in Mode::ALL {
                let bw = self.rate(IPC, mode, mib).map(|r| r * mib as f64);
                row(
                    format!("1 MiB rate ≥ 50% of hot memcpy ({})", mode.label()),
                    div(bw, Some(m.hot)),
                    &pct,
                    &|v| v >= 0.5,
                );
                row(
                    format!("1 MiB rate ≥ 50% of ring-sized memcpy ({})", mode.label()),
                    div(bw, Some(m.ring)),
                    &pct,
                    &|v| v >= 0.5,
                );
            }
        }
        let stream = match &self.stream {
            Some(Ok(s)) => Some(median_f(&s.cat) / median_f(&s.ipc)),
            _ => None,
        };
        row(
            "file through the CLI ≥ 10× as fast as `cat | cat`".to_owned(),
            stream,
            &x,
            &|v| v >= 10.0,
        );
        // Against the pipe's faster mode at the same size: the tools
        // wait adaptively, neither purely spinning nor sleeping.
        let size = crate::stream::SYNTHETIC_SIZE;
        let pipe = Mode::ALL
            .iter()
            .filter_map(|&m| self.rate(PIPE, m, size))
            .reduce(f64::max);
        let synthetic = match &self.stream {
            Some(Ok(s)) => div(Some(synthetic_rate(s)), pipe),
            _ => None,
        };
        row(
            format!(
                "the CLI's synthetic load ({size} B, verified) ≥ 10× the pipe (its faster mode)"
            ),
            synthetic,
            &x,
            &|v| v >= 10.0,
        );
        if self.has(IOX) {
            for &size in &self.sizes {
                for (q, label) in [(0.99, "p99"), (0.999, "p99.9")] {
                    row(
                        format!(
                            "{} spinning round trip {label} no worse than iceoryx2's (ipc / iceoryx2)",
                            size_label(size)
                        ),
                        div(
                            self.quantile(IPC, Mode::Spin, size, q),
                            self.quantile(IOX, Mode::Spin, size, q),
                        ),
                        &x,
                        &|v| v <= 1.0,
                    );
                }
            }
            for mode in Mode::ALL {
                for &size in &self.sizes {
                    // Large messages are compared the way a user would
                    // move them: both receiving in place (zero copy).
                    let (ours, theirs, how) = if size >= IN_PLACE_FROM
                        && self.has(IPC_IN_PLACE)
                        && self.has(IOX_IN_PLACE)
                    {
                        (IPC_IN_PLACE, IOX_IN_PLACE, ", both receiving in place")
                    } else {
                        (IPC, IOX, "")
                    };
                    row(
                        format!(
                            "{} rate ahead of iceoryx2 ({}{how})",
                            size_label(size),
                            mode.label()
                        ),
                        div(self.rate(ours, mode, size), self.rate(theirs, mode, size)),
                        &x,
                        &|v| v > 1.0,
                    );
                    row(
                        format!(
                            "{} round trip ahead of iceoryx2 ({}{how}, iceoryx2 p50 / ipc p50)",
                            size_label(size),
                            mode.label()
                        ),
                        div(self.p50(theirs, mode, size), self.p50(ours, mode, size)),
                        &x,
                        &|v| v > 1.0,
                    );
                }
            }
        } else {
            row(
                "ahead of iceoryx2 (not built: feature `iceoryx2`)".to_owned(),
                None,
                &x,
                &|_| true,
            );
        }
        for mode in Mode::ALL {
            for &size in &self.sizes {
                let many = self.rate(IPC_4X4, mode, size);
                let of_mpmc = div(many, self.rate(IPC_MPMC, mode, size));
                row(
                    format!(
                        "{} 4×4 total ≥ ½ of 1→1 ({}; of {IPC}, and of {IPC_MPMC} in brackets)",
                        size_label(size),
                        mode.label()
                    ),
                    div(many, self.rate(IPC, mode, size)),
                    &|v| match of_mpmc {
                        Some(m) => format!("{v:.2}× ({m:.2}×)"),
                        None => format!("{v:.2}×"),
                    },
                    &|v| v >= 0.5,
                );
            }
        }
    }

    /// The whole report.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "## ipc-bench run of {}\n", today());
        let _ = writeln!(out, "- Machine: {}", machine());
        let _ = writeln!(out, "- Command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- {} interleaved round(s), about {} s per timed run, {:.0} s in all",
            self.rounds, self.run_time, self.elapsed
        );
        let _ = writeln!(
            out,
            "- Every contender copies each message in and out (ipc-core: `send` + `recv_into`), \
             except the two rows \"in place\" ({IPC_IN_PLACE}: `send` + `recv_with`; {IOX_IN_PLACE}: \
             the same loan and copy in, the sample's payload looked at where it lies), measured \
             from {in_place_from} KiB: their receiver checks each message's stamp in the sender's \
             memory and copies nothing out, and a round trip's echo sends straight from the ping it \
             holds. Issue 10's \"ahead of iceoryx2\" targets compare these two rows from there on. \
             Queue depth for throughput: 256 messages up to 64 KiB, 16 MiB worth above (the capacity of \
             ipc-core's rings and mailboxes, POSIX mq if the system allows, else 10; iceoryx2 subscriber \
             buffer). ipc-core's bounded rings take it in the library's default budget, as a user who \
             gives none gets: room for that many of the largest messages, but at most 4 MiB (it holds at least {held}); \
             {IPC_DEEP} is {IPC} in a ring that holds the whole depth (throughput only: {deep}). Pipe \
             and socket keep their default kernel buffers; the zero mailbox holds nothing (each send waits \
             for the receiver); the unbounded one grows by chained segments (its benchmark sender pauses \
             only above 512 MiB queued, so that /dev/shm cannot fill). Round trips use depth 4. Probes \
             carry 8 bytes whatever the row.\n\
             - Ratios and targets use {IPC} (`SharedBuffer::create_single`, the 1→1 fast path); \
             {IPC_MPMC} is the general buffer (`SharedBuffer::create`), which {IPC_4X4} uses.",
            in_place_from = IN_PLACE_FROM >> 10,
            held = self
                .sizes
                .iter()
                .map(|&s| format!("{} at {}", default_ring_messages(s), size_label(s)))
                .collect::<Vec<_>>()
                .join(", "),
            deep = self
                .sizes
                .iter()
                .filter(|&&s| s >= DEEP_FROM)
                .map(|&s| format!("{} MiB at {}", deep_budget(s, depth_for(s)) >> 20, size_label(s)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for mode in Mode::ALL {
            self.throughput_tables(&mut out, mode);
        }
        for mode in Mode::ALL {
            self.latency_tables(&mut out, mode);
        }
        self.memcpy_table(&mut out);
        self.stream_table(&mut out);
        self.targets(&mut out);
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\n### † Failed cells\n");
            let mut f: Vec<_> = self.failures.iter().collect();
            f.sort_by(|a, b| a.0.cmp(b.0));
            for ((name, measure, mode, size), why) in f {
                let _ = writeln!(
                    out,
                    "- {name}, {measure:?}, {}, {}: {why}",
                    mode.label(),
                    size_label(*size)
                );
            }
        }
        out
    }
}
