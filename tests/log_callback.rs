//! `tether_set_log_callback` through the C ABI, with real threads: once it returns (removing
//! or replacing a callback), no call of the old callback is running or starts, so the old
//! `user_data` may be freed at once. A canary in `user_data` is killed right after the call;
//! a callback that sees a dead canary, or is still inside when the call returns, fails.

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::internal::ffi::log::{tether_set_log_callback, TETHER_LOG_DEBUG};
use tether::log::{emit, Level};
use tether::Code;

const ALIVE: u32 = 0xA11CE;
const DEAD: u32 = 0xDEAD;

/// The callback's user data.
struct Canary {
    state: AtomicU32,
    /// Calls under way.
    inside: AtomicUsize,
    /// Calls that found the canary dead (a use after "free").
    violations: AtomicUsize,
    calls: AtomicUsize,
    /// Result of a tether_set_log_callback made from inside the callback (0 = not tried).
    reentrant_result: AtomicU32,
}

impl Canary {
    fn new() -> Box<Canary> {
        Box::new(Canary {
            state: AtomicU32::new(ALIVE),
            inside: AtomicUsize::new(0),
            violations: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            reentrant_result: AtomicU32::new(0),
        })
    }
}

unsafe extern "C" fn slow_callback(user: *mut c_void, _: u32, _: *const c_char, _: usize) {
    // SAFETY: the test keeps every Canary alive for the whole run; "freeing" is the DEAD mark.
    let canary = unsafe { &*(user as *const Canary) };
    canary.inside.fetch_add(1, Ordering::SeqCst);
    canary.calls.fetch_add(1, Ordering::SeqCst);
    for _ in 0..20 {
        if canary.state.load(Ordering::SeqCst) != ALIVE {
            canary.violations.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if canary.reentrant_result.load(Ordering::SeqCst) == 0 {
        // SAFETY: a plain call; it must refuse rather than wait for itself.
        let code = unsafe { tether_set_log_callback(TETHER_LOG_DEBUG, None, std::ptr::null_mut()) };
        canary
            .reentrant_result
            .store(code as u32 + 1, Ordering::SeqCst);
    }
    canary.inside.fetch_sub(1, Ordering::SeqCst);
}

/// Threads logging as fast as they can until `stop`.
fn loggers(stop: &Arc<AtomicBool>, n: usize) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    emit(Level::Warn, &format!("line from logger {i}"));
                }
            })
        })
        .collect()
}

fn wait_until_inside(canary: &Canary) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while canary.inside.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the callback was never called within 30 s"
        );
        std::thread::yield_now();
    }
}

#[test]
fn removing_or_replacing_the_callback_waits_for_calls_under_way() {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = loggers(&stop, 3);
    let mut canaries = Vec::new();
    let mut current = Canary::new();
    unsafe {
        assert_eq!(
            tether_set_log_callback(
                TETHER_LOG_DEBUG,
                Some(slow_callback),
                &*current as *const Canary as *mut c_void
            ),
            Code::Ok
        );
    }
    for round in 0..20 {
        wait_until_inside(&current);
        let next = Canary::new();
        // Odd rounds remove the callback, even rounds replace it.
        let code = unsafe {
            if round % 2 == 1 {
                tether_set_log_callback(TETHER_LOG_DEBUG, None, std::ptr::null_mut())
            } else {
                tether_set_log_callback(
                    TETHER_LOG_DEBUG,
                    Some(slow_callback),
                    &*next as *const Canary as *mut c_void,
                )
            }
        };
        assert_eq!(code, Code::Ok);
        // What a C caller does next: free user_data.
        current.state.store(DEAD, Ordering::SeqCst);
        let inside = current.inside.load(Ordering::SeqCst);
        assert_eq!(
            inside, 0,
            "round {round}: {inside} calls of the old callback still running after the call returned"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            current.inside.load(Ordering::SeqCst),
            0,
            "round {round}: the old callback was called after it was removed"
        );
        if round % 2 == 1 {
            // Install the next one for the following round.
            unsafe {
                assert_eq!(
                    tether_set_log_callback(
                        TETHER_LOG_DEBUG,
                        Some(slow_callback),
                        &*next as *const Canary as *mut c_void
                    ),
                    Code::Ok
                );
            }
        }
        canaries.push(std::mem::replace(&mut current, next));
    }
    let code = unsafe { tether_set_log_callback(TETHER_LOG_DEBUG, None, std::ptr::null_mut()) };
    assert_eq!(code, Code::Ok);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    canaries.push(current);
    let violations: usize = canaries
        .iter()
        .map(|c| c.violations.load(Ordering::SeqCst))
        .sum();
    let calls: usize = canaries
        .iter()
        .map(|c| c.calls.load(Ordering::SeqCst))
        .sum();
    assert!(calls >= 20, "only {calls} callback calls");
    assert_eq!(violations, 0, "{violations} calls saw freed user_data");
    // From inside the callback the call is refused instead of waiting for itself forever.
    let reentrant = canaries[0].reentrant_result.load(Ordering::SeqCst);
    assert_eq!(reentrant, Code::InvalidState as u32 + 1);
}
