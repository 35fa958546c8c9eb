//! The `.npy` reader against numpy: every file of `tests/data/npy_corpus.json` (hand-written and mutated headers,
//! made by `scripts/gen_npy_corpus.py` with what `numpy.load` returned for each) must be read into the same array
//! when numpy reads it into a supported dtype, and refused when numpy refuses it or reads an unsupported dtype.

use std::path::Path;

use lsmooth::io::npy::{self, DType, Data};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn numpy_dtype(d: DType) -> &'static [&'static str] {
    match d {
        DType::F16 => &["<f2", ">f2"],
        DType::F32 => &["<f4", ">f4"],
        DType::F64 => &["<f8", ">f8"],
        DType::Int(1) => &["|i1"],
        DType::UInt(1) => &["|u1"],
        DType::Int(2) => &["<i2", ">i2"],
        DType::UInt(2) => &["<u2", ">u2"],
        DType::Int(4) => &["<i4", ">i4"],
        DType::UInt(4) => &["<u4", ">u4"],
        DType::Int(8) => &["<i8", ">i8"],
        DType::UInt(8) => &["<u8", ">u8"],
        _ => &[],
    }
}

#[test]
fn reads_exactly_what_numpy_reads() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/npy_corpus.json")).unwrap();
    let corpus: Value = serde_json::from_str(&text).unwrap();
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() > 1000, "the corpus is its full size");
    let (mut accepted, mut mismatches) = (0, Vec::new());
    for (i, case) in cases.iter().enumerate() {
        let bytes = unhex(case["file_hex"].as_str().unwrap());
        let got = npy::parse(Path::new("case.npy"), &bytes);
        let header = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        if case["ok"].as_bool().unwrap() {
            let a = match got {
                Ok(a) => a,
                Err(e) => {
                    mismatches.push(format!("case {i}: numpy reads it, we refuse: {e}\n  {header:?}"));
                    continue;
                }
            };
            accepted += 1;
            let want_shape: Vec<usize> = case["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let dt = case["dtype"].as_str().unwrap();
            if a.shape != want_shape || !numpy_dtype(a.dtype).contains(&dt) {
                mismatches.push(format!(
                    "case {i}: numpy {dt} {want_shape:?}, we {} {:?}\n  {header:?}",
                    a.dtype, a.shape
                ));
                continue;
            }
            let got_f64: Vec<f64> = match &a.data {
                Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
                Data::Int(v) => v.iter().map(|&x| x as f64).collect(),
            };
            let same = if let Some(bits) = case.get("float_bits") {
                let want: Vec<u64> = bits.as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
                // Floats are read as the commands compute them, in f32: numpy's value rounded to nearest (exact for
                // float16 and float32). NaN payloads may differ between widening paths; a NaN must stay a NaN.
                got_f64.len() == want.len()
                    && got_f64.iter().zip(&want).all(|(g, &w)| {
                        let w = f64::from_bits(w) as f32 as f64;
                        (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits()
                    })
            } else if let Data::Int(v) = &a.data {
                let want: Vec<i64> = case["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect();
                *v == want
            } else {
                let want: Vec<f64> = case["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32 as f64)
                    .collect();
                got_f64 == want
            };
            if !same {
                mismatches.push(format!("case {i}: values differ from numpy's\n  {header:?}"));
            }
        } else if let Ok(a) = got {
            mismatches.push(format!(
                "case {i}: numpy refuses it ({}), we read {} {:?}\n  {header:?}",
                case.get("numpy_error").or(case.get("unsupported")).unwrap(),
                a.dtype,
                a.shape
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ from numpy:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
    assert!(accepted > 100, "{accepted} accepted cases");
}
