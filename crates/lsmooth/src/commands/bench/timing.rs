//! Timing and memory helpers of the benchmarks: medians, quartiles, warm timings, the peak resident memory.

use std::time::Instant;

/// The median of `v` (not empty).
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The lower quartile, median and upper quartile of `v` (not empty), by linear interpolation between order
/// statistics.
pub(super) fn quartiles(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        let x = q * (v.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x - x.floor());
        if i + 1 < v.len() {
            v[i] + f * (v[i + 1] - v[i])
        } else {
            v[i]
        }
    };
    [at(0.25), median(v.clone()), at(0.75)]
}

/// Seconds the second of two calls of `f` takes: the first leaves the caches as a run of back-to-back calls
/// would (the timed call finds its own buffers where its previous call left them, not the other measurements').
pub(super) fn time_warm(f: &mut impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// The value of the line `key` (`VmHWM:`, `MemAvailable:`) of a `/proc` file that gives it in kB, in bytes;
/// `None` where the file or the line is missing.
fn proc_bytes(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The peak resident memory of the process (VmHWM), in bytes, where the OS reports it.
pub(super) fn peak_rss() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmHWM:")
}

/// Resets the peak resident memory to the current one (Linux: `clear_refs` 5); false where that is unavailable.
pub(super) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The current resident memory (VmRSS), in bytes, where the OS reports it.
pub(super) fn rss() -> Option<u64> {
    proc_bytes("/proc/self/status", "VmRSS:")
}

/// The memory the system can give a new process without swapping (`MemAvailable` of `/proc/meminfo`), in bytes;
/// `None` where it is not known.
pub fn available_memory() -> Option<u64> {
    proc_bytes("/proc/meminfo", "MemAvailable:")
}

/// Refuses a benchmark whose buffers (`bytes`) would not fit in the memory available now, naming the flag and
/// value that sized them, so that it fails with a message instead of being killed or aborting.
pub fn check_fits(bytes: u128, flag: &str, value: &str) -> Result<(), crate::CliError> {
    match available_memory() {
        Some(free) if bytes > free as u128 => Err(crate::CliError::Usage(format!(
            "{flag} {value}: the benchmark's buffers need {:.1} GB, and this machine has {:.1} GB available",
            bytes as f64 / 1e9,
            free as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}
