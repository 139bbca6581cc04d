//! Process-shared synchronization on futexes: an [`EventCount`] (the wake-up
//! channel of the rings) and a counting [`Semaphore`].
//!
//! Both follow the same recipe: an atomic fast path, a bounded spin, then a
//! futex sleep; a count of sleepers so that the fast path makes no system
//! call when nobody sleeps. They are `#[repr(C)]` and live in shared memory.
//!
//! Why the rings do not use counting semaphores: a process killed between
//! taking a permit and using it leaks that permit forever. The rings keep
//! their state in per-slot stamps that a survivor can repair, and use the
//! event count only to sleep and wake.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::atomic::{fence, spin_hint, AtomicU32};

/// Sleeps while `*word == expected` (a shared futex; under loom, a yield).
fn sleep_on(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    #[cfg(not(loom))]
    crate::sys::futex_wait(word, expected, timeout);
    #[cfg(loom)]
    {
        let _ = (word, expected, timeout);
        loom::thread::yield_now();
    }
}

/// The waiter's half of the asymmetric barrier: a full barrier on every
/// CPU running a registered process (under loom, which models only the
/// fences, the SeqCst fence before it stands for it). False if the kernel
/// refused: then the notifiers' light fences do not pair with anything,
/// and the caller must make them use full ones.
fn heavy_barrier() -> bool {
    #[cfg(not(loom))]
    return crate::sys::membarrier_ready() && crate::sys::membarrier_global();
    #[cfg(loom)]
    return true;
}

/// Wakes up to `count` sleepers on `word`.
fn wake(word: &AtomicU32, count: i32) {
    #[cfg(not(loom))]
    crate::sys::futex_wake(word, count);
    #[cfg(loom)]
    let _ = (word, count);
}

/// A futex-backed "something changed" signal with a sleeper count.
///
/// Waiters call [`EventCount::prepare`], re-check their condition, then
/// [`EventCount::wait`] with the returned ticket. Notifiers change the
/// condition, then call [`EventCount::notify`], which is a single load when
/// nobody sleeps.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct EventCount {
    epoch: AtomicU32,
    sleepers: AtomicU32,
    /// 1 while some waiter may sleep and no wake was sent since it armed:
    /// a notifier that finds it 0 makes no system call, even if woken
    /// sleepers have not run yet to withdraw themselves.
    armed: AtomicU32,
}

/// A snapshot of an [`EventCount`]'s epoch, taken before re-checking.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Ticket {
    epoch: u32,
    barrier_failed: bool,
}

impl Ticket {
    /// True if the asymmetric barrier of [`EventCount::prepare`] failed:
    /// a notifier using the light (compiler-fence) notify may then miss us.
    pub fn barrier_failed(&self) -> bool {
        self.barrier_failed
    }
}

impl EventCount {
    /// Announces a waiter and returns the epoch to wait on. Pair every call
    /// with [`EventCount::wait`] or [`EventCount::cancel`].
    pub fn prepare(&self) -> Ticket {
        // The epoch first: a notifier that disarms after we armed below
        // bumps the epoch after this read, so our futex wait cannot sleep
        // through it.
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        self.armed.store(1, Ordering::SeqCst);
        // Pairs with the barrier in `notify`: either the notifier sees us
        // armed, or our re-check sees its change. The heavy half of an
        // asymmetric pair when this process can (see `notify_light`).
        fence(Ordering::SeqCst);
        Ticket {
            epoch,
            barrier_failed: !heavy_barrier(),
        }
    }

    /// Sleeps until notified after `ticket` was taken, or `timeout` passes.
    /// Spurious returns are possible; callers re-check. Ends the wait.
    pub fn wait(&self, ticket: Ticket, timeout: Option<Duration>) {
        sleep_on(&self.epoch, ticket.epoch, timeout);
        self.cancel();
    }

    /// Withdraws a waiter announced by [`EventCount::prepare`].
    pub fn cancel(&self) {
        // A hostile peer may have zeroed the count: never wrap below zero.
        let _ = self
            .sleepers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Wakes every sleeper, if there is any. One fence and one load when
    /// nobody sleeps, and when a wake is already on its way.
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        self.wake_if_armed();
    }

    /// [`EventCount::notify`] with only a compiler fence: correct only if
    /// every process that may wait on this event count registered for
    /// global membarriers (`sys::membarrier_ready`), and so does this one.
    /// The waiters' barrier in `prepare` then orders both sides.
    pub(crate) fn notify_light(&self) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        self.wake_if_armed();
    }

    fn wake_if_armed(&self) {
        if self.armed.load(Ordering::Relaxed) != 0 && self.armed.swap(0, Ordering::SeqCst) != 0 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            wake(&self.epoch, i32::MAX);
        }
    }

    /// Number of announced waiters (for status and tests).
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::Relaxed)
    }

    /// Only under loom, for `tests/loom.rs`, whose model of the futex
    /// sleeps while the epoch equals the ticket: the epoch and armed words.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn loom_words(&self) -> (u32, u32) {
        (
            self.epoch.load(Ordering::SeqCst),
            self.armed.load(Ordering::SeqCst),
        )
    }
}

#[cfg(loom)]
impl Ticket {
    /// Only under loom, for `tests/loom.rs`: the epoch this ticket waits on.
    #[doc(hidden)]
    pub fn loom_epoch(self) -> u32 {
        self.epoch
    }
}

/// How a blocking call spends its time before sleeping: spin (bounded by
/// time, adapted to how often spinning paid off), yield a few times, then
/// sleep on the futex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinPolicy {
    /// Longest busy-wait (`spin_loop`) before yielding. Callers spin less
    /// while spinning keeps failing (down to 1/64 of this), more when it
    /// pays off or a sleep ended within this budget.
    pub spin: Duration,
    /// `sched_yield` calls before sleeping on the futex.
    pub yields: u32,
}

impl SpinPolicy {
    /// Spin a few microseconds (about a futex wake's cost), yield a
    /// little, then sleep: good latency without burning a core for long.
    pub const DEFAULT: SpinPolicy = SpinPolicy {
        spin: Duration::from_micros(20),
        yields: 4,
    };
    /// Sleep at once: lowest CPU use.
    pub const SLEEP: SpinPolicy = SpinPolicy {
        spin: Duration::ZERO,
        yields: 0,
    };
    /// Spin long before sleeping: lowest latency when a core is free.
    pub const SPIN: SpinPolicy = SpinPolicy {
        spin: Duration::from_micros(200),
        yields: 16,
    };
}

impl Default for SpinPolicy {
    fn default() -> Self {
        SpinPolicy::DEFAULT
    }
}

/// Spins on `attempt` for at most `budget` (checking the clock every 64
/// rounds); true if it succeeded.
pub(crate) fn spin_for(budget: Duration, mut attempt: impl FnMut() -> bool) -> bool {
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if attempt() {
                return true;
            }
            spin_hint();
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

/// When a blocking operation gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Do not wait at all.
    Now,
    /// Wait until this instant.
    At(Instant),
    /// Wait as long as it takes.
    Never,
}

impl Deadline {
    /// A deadline `timeout` from now (saturating to [`Deadline::Never`]).
    pub fn after(timeout: Duration) -> Deadline {
        Instant::now()
            .checked_add(timeout)
            .map_or(Deadline::Never, Deadline::At)
    }

    /// Time left, `None` for never; zero once passed.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Deadline::Now => Some(Duration::ZERO),
            Deadline::At(t) => Some(t.saturating_duration_since(Instant::now())),
            Deadline::Never => None,
        }
    }

    /// True once the deadline has passed.
    pub fn passed(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

/// A process-shared counting semaphore.
///
/// ```
/// use ipc_core::sync::Semaphore;
/// use std::time::Duration;
/// let s = Semaphore::new(1);
/// assert!(s.try_wait());
/// assert!(!s.try_wait());
/// assert!(!s.wait_timeout(Duration::from_millis(1)));
/// s.post();
/// s.wait();
/// ```
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct Semaphore {
    count: AtomicU32,
    sleepers: AtomicU32,
}

impl Semaphore {
    /// A semaphore holding `permits`. To place one in shared memory, write
    /// this value into the mapping before publishing it.
    pub fn new(permits: u32) -> Semaphore {
        Semaphore {
            count: AtomicU32::new(permits),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Takes a permit if one is available, without waiting.
    pub fn try_wait(&self) -> bool {
        let mut c = self.count.load(Ordering::Relaxed);
        while c > 0 {
            match self
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn wait(&self) {
        self.wait_until(Deadline::Never, SpinPolicy::DEFAULT);
    }

    /// Takes a permit, waiting at most `timeout`. False if none came.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Deadline::after(timeout), SpinPolicy::DEFAULT)
    }

    /// Takes a permit before `deadline`, spinning as `policy` says first.
    pub fn wait_until(&self, deadline: Deadline, policy: SpinPolicy) -> bool {
        if spin_for(policy.spin, || self.try_wait()) {
            return true;
        }
        for _ in 0..policy.yields {
            if self.try_wait() {
                return true;
            }
            std::thread::yield_now();
        }
        loop {
            if self.try_wait() {
                return true;
            }
            let remaining = deadline.remaining();
            if remaining == Some(Duration::ZERO) {
                return false;
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            // Sleep only while the count is still zero; a post in between
            // changes the word and the futex returns at once.
            sleep_on(&self.count, 0, remaining);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Returns a permit, waking one sleeper if there is any.
    pub fn post(&self) {
        self.count.fetch_add(1, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            wake(&self.count, 1);
        }
    }

    /// Permits available now.
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn semaphore_wakes_a_sleeping_thread() {
        let s = Arc::new(Semaphore::new(0));
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_until(Deadline::Never, SpinPolicy::SLEEP));
        std::thread::sleep(Duration::from_millis(20));
        s.post();
        assert!(t.join().unwrap());
        assert_eq!(s.value(), 0);
    }

    #[test]
    fn semaphore_counts_permits() {
        let s = Semaphore::new(0);
        for _ in 0..3 {
            s.post();
        }
        assert_eq!(s.value(), 3);
        assert!(s.try_wait() && s.try_wait() && s.try_wait());
        assert!(!s.try_wait());
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "prepare() calls membarrier(2), a syscall Miri does not support"
    )]
    fn event_count_notify_without_sleepers_is_quiet() {
        let e = EventCount::default();
        e.notify();
        let t = e.prepare();
        e.notify();
        // The epoch moved after the ticket: the wait returns at once.
        e.wait(t, Some(Duration::from_secs(10)));
        assert_eq!(e.sleepers(), 0);
    }
}
