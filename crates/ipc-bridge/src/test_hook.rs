//! For the tests only: a bridge that kills itself (SIGKILL) at an exact
//! point of its work, named by an environment variable, so that a crash
//! window a kill from outside hits only in a few runs of a hundred is hit
//! every time. Unset (the normal case), a hook costs one branch.

/// Events left before the bridge kills itself (`None`: never).
pub struct Countdown {
    left: Option<u64>,
    what: &'static str,
}

impl Countdown {
    /// Reads the count from the variable `what` (unset or not a number:
    /// never).
    pub fn from_env(what: &'static str) -> Countdown {
        Countdown {
            left: std::env::var(what).ok().and_then(|v| v.parse().ok()),
            what,
        }
    }

    /// One more event: at the count's end, the bridge kills itself.
    pub fn tick(&mut self) {
        let Some(left) = self.left.as_mut() else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            log::warn!("{}: killing this bridge here", self.what);
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
