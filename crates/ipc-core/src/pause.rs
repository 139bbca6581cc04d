//! Named pause points in the chain protocol of unbounded queues: places
//! where a process descheduled for long lets the chain move on under it.
//! With the `internals` feature, a test thread can have a function called
//! at each point it passes ([`set`]), and so stage exactly the
//! interleavings that a descheduling there makes (the function blocks
//! until the test lets it go). Without the feature, `at` is empty.

#[cfg(feature = "internals")]
mod armed {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Set once any thread has set a function: until then a pause point
    /// costs one relaxed load.
    static ANY: AtomicBool = AtomicBool::new(false);

    /// What a thread calls at each pause point it passes.
    type Hook = Box<dyn FnMut(&'static str)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Calls `f` with the name of every pause point this thread passes,
    /// until [`clear`] (or the thread's end).
    pub fn set(f: impl FnMut(&'static str) + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
        ANY.store(true, Ordering::Relaxed);
    }

    /// Ends this thread's [`set`].
    pub fn clear() {
        HOOK.with(|h| *h.borrow_mut() = None);
    }

    #[inline]
    pub(crate) fn at(point: &'static str) {
        if ANY.load(Ordering::Relaxed) {
            HOOK.with(|h| {
                if let Some(f) = h.borrow_mut().as_mut() {
                    f(point);
                }
            });
        }
    }
}

#[cfg(feature = "internals")]
pub use armed::{clear, set};

/// Pause point `point` (see the module's documentation).
#[inline(always)]
pub(crate) fn at(point: &'static str) {
    #[cfg(feature = "internals")]
    armed::at(point);
    #[cfg(not(feature = "internals"))]
    let _ = point;
}
