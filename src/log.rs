//! The one diagnostics hook: what a person needs to troubleshoot a connection (resolve, TCP,
//! TLS version and suite, CONNACK, retries with their delay, token renewals). Never a
//! secret: callers format only names, numbers and error messages, which never hold keys or
//! tokens.
//!
//! The hook is process-wide. Without one, nothing is formatted or printed.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Severity, most severe first (the C values of `tether_log_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Failures.
    Error = 1,
    /// Refusals, retries, things that need attention.
    Warn = 2,
    /// Connection milestones.
    Info = 3,
    /// Packet-level detail.
    Debug = 4,
}

impl Level {
    /// `ERROR`, `WARN`, `INFO` or `DEBUG`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

/// A receiver of log lines.
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    /// Whether this thread is inside the sink (a line logged from there is dropped, and the
    /// sink cannot be replaced from there: either would deadlock).
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// Installs `sink` for lines up to `max` (or removes the hook with `None`).
///
/// Returns only when no call of the previous sink is running on any thread, and none starts
/// afterwards: a sink runs while holding the read side of the lock this takes for writing.
/// So whatever the old sink uses (a C callback's `user_data`) may be freed as soon as this
/// returns. Called from inside a sink it would wait for itself: that returns `false` and
/// changes nothing.
pub fn set_sink(max: Level, sink: Option<Sink>) -> bool {
    if IN_SINK.with(Cell::get) {
        return false;
    }
    let mut slot = SINK.write().unwrap_or_else(|e| e.into_inner());
    MAX_LEVEL.store(
        if sink.is_some() { max as u8 } else { 0 },
        Ordering::Release,
    );
    *slot = sink;
    true
}

/// Whether a line at `level` would be delivered.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Acquire)
}

/// Delivers one line (formatting only when enabled; see [`crate::log!`]).
pub fn emit(level: Level, message: &str) {
    if !enabled(level) || IN_SINK.with(Cell::get) {
        return;
    }
    // The read guard is held for the whole call: `set_sink` waits for it.
    let slot = SINK.read().unwrap_or_else(|e| e.into_inner());
    if let Some(sink) = slot.as_ref() {
        struct Inside;
        impl Drop for Inside {
            fn drop(&mut self) {
                IN_SINK.with(|f| f.set(false));
            }
        }
        IN_SINK.with(|f| f.set(true));
        let _inside = Inside;
        sink(level, message);
    }
}

/// `tether::log!(Level::Info, "connected to {host}")`: formats only when the level is on.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::emit($level, &format!($($arg)*));
        }
    };
}

/// Serializes the tests that install a process-wide sink.
#[cfg(test)]
pub(crate) static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lines_above_the_level_are_not_formatted_or_delivered() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        assert!(set_sink(
            Level::Info,
            Some(Arc::new(move |level, msg: &str| {
                sink_seen
                    .lock()
                    .unwrap()
                    .push(format!("{} {msg}", level.name()))
            })),
        ));
        crate::log!(Level::Info, "connected to {}", "hub");
        crate::log!(Level::Debug, "packet {}", 1);
        assert!(set_sink(Level::Debug, None));
        crate::log!(Level::Error, "after removal");
        assert_eq!(*seen.lock().unwrap(), ["INFO connected to hub"]);
    }
}
