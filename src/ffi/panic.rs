//! The panic boundary: no panic ever unwinds into C.
//!
//! Every exported function wraps its body in one of these, which also gives the call its
//! own set of claimed argument ranges (the overlap rule, `ffi::claim`). A failure is recorded as the
//! thread's last error (see `ffi/error.rs`) before its code is returned.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Code, Error, Result};
use crate::ffi::arg_scope;
use crate::ffi::error::set_last_error;

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::new(
        Code::Panic,
        format!("internal error (please report it): {what}"),
    )
}

/// Runs `body`; returns `Ok` or the failure's code, recording the failure as the last error.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> Code {
    match arg_scope(|| catch_unwind(AssertUnwindSafe(body))) {
        Ok(Ok(())) => Code::Ok,
        Ok(Err(e)) => {
            let code = e.code();
            set_last_error(e);
            code
        }
        Err(payload) => {
            set_last_error(panic_error(payload));
            Code::Panic
        }
    }
}

/// Runs `body` that returns a value; on failure records it and returns `fallback`.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> Result<T>) -> T {
    match arg_scope(|| catch_unwind(AssertUnwindSafe(body))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(e);
            fallback
        }
        Err(payload) => {
            set_last_error(panic_error(payload));
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::error::last_error_message;

    #[test]
    fn a_panic_becomes_a_result_and_a_message() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let code = guard(|| panic!("boom"));
        std::panic::set_hook(prev);
        assert_eq!(code, Code::Panic);
        assert_eq!(
            last_error_message().as_deref(),
            Some("internal error (please report it): boom")
        );
    }

    #[test]
    fn errors_are_recorded_and_values_fall_back() {
        let v = guard_value(7u32, || Err(Error::new(Code::InvalidArgument, "bad thing")));
        assert_eq!(v, 7);
        assert_eq!(last_error_message().as_deref(), Some("bad thing"));
        assert_eq!(guard(|| Ok(())), Code::Ok);
    }
}
