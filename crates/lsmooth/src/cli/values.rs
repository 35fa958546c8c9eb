//! The value parsers of the arguments: every number is range-checked while parsing, in the type it is used in,
//! and a bad value is refused naming its flag (clap adds the flag to the message).

use label_smoothing::{Reduction, Spread};

/// A `usize` flag within `LO..=HI`, checked while parsing, so that no value can overflow an allocation.
pub fn usize_in<const LO: usize, const HI: usize>(s: &str) -> Result<usize, String> {
    let v: usize = s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))?;
    if (LO..=HI).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside {LO}..={HI}"))
    }
}

/// A finite number in the type it is used in (`inf`, `NaN`, and values that overflow the type, are refused).
fn finite<T: std::str::FromStr + Copy + Into<f64>>(s: &str) -> Result<T, String> {
    let v: T = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.into().is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not finite"))
    }
}

/// A finite `f32` flag (`inf` and `NaN` are refused; the command checks its own range).
pub fn finite_f32(s: &str) -> Result<f32, String> {
    finite(s)
}

/// A finite `f64` flag.
pub fn finite_f64(s: &str) -> Result<f64, String> {
    finite(s)
}

/// A finite, positive `f32` flag (a temperature).
pub fn positive_f32(s: &str) -> Result<f32, String> {
    let v = finite_f32(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not positive"))
    }
}

/// A threshold used in f32: finite, at least 0, at most f32's largest value.
pub fn non_negative_f32(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=f32::MAX as f64).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to {:e} (float32), got {s}", f32::MAX)),
    }
}

/// A logit margin: from 0 to 1000 (a margin of 1000 already puts all of a softmax on one class; larger ones
/// overflow the float32 logits).
pub fn margin(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a margin from 0 to 1000, got {s}")),
    }
}

pub fn open_unit(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("expected a number strictly between 0 and 1, got {s}")),
    }
}

pub fn parse_spread(s: &str) -> Result<Spread, String> {
    s.parse()
}

pub fn parse_reduction(s: &str) -> Result<Reduction, String> {
    s.parse()
}
