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
        if self.ends() {
            log::warn!("{}: killing this bridge here", self.what);
            kill_self();
        }
    }

    /// One more event: at the count's end, the bridge kills itself
    /// `after` this long, from another thread, while this one goes on
    /// (into a wait that the kill is meant to land in).
    pub fn tick_later(&mut self, after: std::time::Duration) {
        if self.ends() {
            log::warn!("{}: killing this bridge in {after:?}", self.what);
            std::thread::spawn(move || {
                std::thread::sleep(after);
                kill_self();
            });
        }
    }

    /// Counts one event down: true at the count's end (once).
    fn ends(&mut self) -> bool {
        let Some(left) = self.left.as_mut() else {
            return false;
        };
        *left = left.saturating_sub(1);
        let end = *left == 0;
        if end {
            self.left = None;
        }
        end
    }
}

fn kill_self() {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
}
