//! Hooks for the tests that compare the kernels, compiled only with the `test-hooks` feature (the core crate's
//! own tests enable it through a dev-dependency on itself); not part of the API. They are public so that the
//! comparison can be an integration test, which links to the kernels the core crate compiled once instead of
//! compiling them again as a unit test would.

thread_local! {
    /// Calls on this thread use the row kernel for every row, never the rows across the lanes.
    pub(super) static ROWS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Groups of rows computed across the lanes on this thread.
    pub(super) static GROUPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with every loss call it makes on this thread computed by the row kernel alone (no rows across the
/// lanes). The setting is restored when `f` returns or panics.
pub fn with_row_kernel_only<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ROWS_ONLY.set(self.0);
        }
    }
    let _restore = Restore(ROWS_ONLY.replace(true));
    f()
}

/// The number of groups of rows the few-classes kernel has computed on this thread so far.
pub fn lane_groups() -> usize {
    GROUPS.get()
}
