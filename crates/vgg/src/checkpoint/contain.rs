//! A third-party parser that panics on a malformed file (an overflow in `hdf5-reader`'s heap
//! arithmetic, found by fuzzing) is a bug in that crate, but the user still gets one line naming
//! the file and exit code 2: the parse runs under `catch_unwind`, with the panic message kept
//! for the error and not printed.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `parse`; a panic inside it becomes `Err("the reader failed: MESSAGE")`.
pub fn contained<T>(parse: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // Panics outside `contained` (or on other threads) still reach the previous hook.
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info)
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(parse));
    QUIET.with(|q| q.set(was));
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(format!("the reader failed on it ({message})"))
    })
}

#[cfg(test)]
mod tests {
    use super::contained;

    #[test]
    fn a_panic_is_an_error_with_its_message() {
        let err = contained::<()>(|| panic!("attempt to add with overflow")).unwrap_err();
        assert_eq!(
            err,
            "the reader failed on it (attempt to add with overflow)"
        );
        assert_eq!(contained(|| Ok(3)), Ok(3));
        assert_eq!(contained::<()>(|| Err("bad".into())), Err("bad".into()));
    }
}
