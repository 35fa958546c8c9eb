//! The rayon pools the kernels run on: one per requested thread count, built on first use and kept.
//!
//! The kernels give the same bits for any number of threads, so the count only changes the speed. `0` means
//! rayon's global pool (`RAYON_NUM_THREADS`, else one thread per core). Calls smaller than [`INLINE_ELEMENTS`]
//! run on the calling thread instead: handing them to a pool and waking its threads costs more than the work.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::cell::OnceCell;
use std::sync::{Arc, Mutex};

/// Calls that touch fewer elements than this run on the calling thread (64 x 751 logits take about 20 µs there
/// and 30-100 µs through a pool whose threads have to be woken).
pub const INLINE_ELEMENTS: usize = 1 << 17;

thread_local! {
    /// A one-thread pool whose only worker is this thread, so that `install` runs inline.
    static INLINE: OnceCell<Option<ThreadPool>> = const { OnceCell::new() };
}

static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());

fn pool(threads: usize) -> PyResult<Arc<ThreadPool>> {
    // A panic while the lock was held cannot leave the list half-written (push is the only change), so a
    // poisoned lock is still a valid list.
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
        return Ok(p.clone());
    }
    let p = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("label-smoothing-{i}"))
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start {threads} threads: {e}")))?;
    let p = Arc::new(p);
    pools.push((threads, p.clone()));
    Ok(p)
}

/// Runs `f` on the calling thread (inside a pool of one thread that is this thread, so that the kernels' parallel
/// loops run sequentially here); `None` if such a pool cannot be built.
fn inline<R: Send, F: FnOnce() -> R + Send>(f: F) -> Result<R, F> {
    INLINE.with(|cell| {
        let pool = cell.get_or_init(|| {
            ThreadPoolBuilder::new()
                .num_threads(1)
                .use_current_thread()
                .build()
                .ok()
        });
        match pool {
            Some(p) => Ok(p.install(f)),
            None => Err(f),
        }
    })
}

/// Runs `f` with the GIL released: on the calling thread when it touches fewer than [`INLINE_ELEMENTS`]
/// elements (`work`), else on a pool of `threads` threads (`0`: rayon's global pool).
pub fn detached<R: Send>(py: Python<'_>, threads: usize, work: usize, f: impl FnOnce() -> R + Send) -> PyResult<R> {
    if work < INLINE_ELEMENTS {
        return Ok(py.detach(|| match inline(f) {
            Ok(r) => r,
            Err(f) => f(),
        }));
    }
    if threads == 0 {
        Ok(py.detach(f))
    } else {
        let pool = pool(threads)?;
        Ok(py.detach(|| pool.install(f)))
    }
}

/// The number of threads of rayon's global pool: what `threads=0` uses.
#[pyfunction]
pub fn default_num_threads() -> usize {
    rayon::current_num_threads()
}
