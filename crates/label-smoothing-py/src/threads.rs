//! The rayon pools the kernels run on: one per requested thread count, built on first use and kept.
//!
//! The kernels give the same bits for any number of threads, so the count only changes the speed. `0` means
//! rayon's global pool (`RAYON_NUM_THREADS`, else one thread per core).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, Mutex};

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

/// Runs `f` with the GIL released, on a pool of `threads` threads (`0`: rayon's global pool).
pub fn detached<R: Send>(py: Python<'_>, threads: usize, f: impl FnOnce() -> R + Send) -> PyResult<R> {
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
