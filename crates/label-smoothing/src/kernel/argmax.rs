//! The arg-max of a row (the predicted class, for the token accuracy), in one read of the logits.

use super::io::RowIo;
use super::stats::lane_body;
use crate::element::Element;
use crate::simd::{Isa, LANES};

/// Whether `v` beats `best` for the arg-max: larger, or the first NaN (a NaN counts as larger than every number,
/// as in `torch.argmax`).
#[inline(always)]
fn beats(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// The largest logit of classes `[start, end)` of a row and its class, the first of equal ones (`start` when all
/// are `-inf`). Exact: comparisons only, so the same on every instruction set.
#[inline(always)]
pub(crate) fn argmax<S: Isa, E: Element, IO: RowIo<E>>(io: &IO, start: usize, end: usize) -> (f32, usize) {
    let body_end = lane_body(start, end, io.len());
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut at = [u32::MAX; LANES];
    let mut c = start;
    while c < body_end {
        // SAFETY: c + LANES <= body_end <= len (checked by `lane_body`).
        let v = unsafe { io.load_lanes::<S>(c) };
        for j in 0..LANES {
            if beats(v[j], best[j]) {
                best[j] = v[j];
                at[j] = (c + j) as u32;
            }
        }
        c += LANES;
    }
    let rem = end - body_end;
    if rem > 0 {
        // -inf padding never beats anything.
        let v = io.tail::<S>(body_end, rem, f32::NEG_INFINITY);
        for j in 0..rem {
            if beats(v[j], best[j]) {
                best[j] = v[j];
                at[j] = (body_end + j) as u32;
            }
        }
    }
    let (mut value, mut class) = (f32::NEG_INFINITY, u32::MAX);
    for j in 0..LANES {
        if beats(best[j], value) || (at[j] < class && (best[j] == value || (best[j].is_nan() && value.is_nan()))) {
            value = best[j];
            class = at[j];
        }
    }
    (value, if class == u32::MAX { start } else { class as usize })
}

/// Combines the arg-max of a row's consecutive parts, in class order: `(value, class)` of each.
pub(crate) fn combine_argmax(parts: impl IntoIterator<Item = (f32, usize)>) -> Option<(f32, usize)> {
    let mut out: Option<(f32, usize)> = None;
    for (v, c) in parts {
        match out {
            Some((b, _)) if !beats(v, b) => {}
            _ => out = Some((v, c)),
        }
    }
    out
}
