//! The `.npz`, safetensors and `torch.save` readers against their reference writers and readers: every file of
//! `tests/data/formats/` was written by numpy, the `safetensors` package or `torch.save`, and `expected.json` holds
//! what `np.load`, `safetensors.torch.load_file` and `torch.load` read from it (`scripts/gen_array_fixtures.py`).
//! Then each reader fuzzed: random bytes and mutated fixtures give a one-line error or a consistent array, never a
//! panic, with memory bounded by the file.

use lsmooth::io::arrays::read_array;
use lsmooth::io::npy::Data;
use lsmooth::io::values::Want;
use proptest::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;
use common::{lsmooth, ok};
#[path = "common/meter.rs"]
mod meter;
use meter::peak_bytes;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats")
}

#[test]
fn every_fixture_reads_as_its_reference_reader_reads_it() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() >= 30, "the full fixture set");
    for case in cases {
        let spec = case["spec"].as_str().unwrap();
        let path = fixtures().join(spec);
        if let Some(because) = case.get("refused") {
            let e = read_array(&path, Want::F32, "an array").unwrap_err().to_string();
            let because = because.as_str().unwrap();
            assert!(e.contains(because), "{spec}: '{e}' lacks '{because}'");
            assert!(
                e.starts_with(&fixtures().display().to_string()) && !e.contains('\n'),
                "{spec}: {e}"
            );
            continue;
        }
        let dtype = case["dtype"].as_str().unwrap();
        let want = if dtype.contains("float") { Want::F32 } else { Want::I64 };
        let a = read_array(&path, want, "an array").unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(a.dtype.to_string(), dtype, "{spec}");
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(a.shape, shape, "{spec}");
        let values = case["values"].as_array().unwrap();
        match &a.data {
            // Floats as the commands compute them: the reference value rounded to f32 (exact below float64).
            Data::F32(v) => {
                let want: Vec<f32> = values.iter().map(|x| x.as_f64().unwrap() as f32).collect();
                assert_eq!(v, &want, "{spec}");
            }
            Data::Int(v) => {
                let want: Vec<i64> = values.iter().map(|x| x.as_i64().unwrap()).collect();
                assert_eq!(v, &want, "{spec}");
            }
        }
        // The other kind is a typed error naming the dtype found.
        let other = if want == Want::F32 { Want::I64 } else { Want::F32 };
        let e = read_array(&path, other, "an array").unwrap_err().to_string();
        assert!(e.contains(&format!("found {dtype}")), "{spec}: {e}");
    }
}

#[test]
fn a_path_with_a_colon_that_exists_is_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("logits:arr_0");
    std::fs::copy(fixtures().join("single.npz"), &odd).unwrap();
    let a = read_array(&odd, Want::F32, "an array").unwrap();
    assert_eq!(a.shape, vec![4, 5]);
    let e = read_array(&dir.path().join("absent.npz:x"), Want::F32, "an array")
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.npz:x") && e.contains("No such file"), "{e}");
}

#[test]
fn loss_and_calibrate_read_the_same_logits_from_every_format() {
    // The generator saved the same logits and labels with numpy, safetensors and torch.save.
    let f = |name: &str| fixtures().join(name).display().to_string();
    let run = |logits: String, labels: String| {
        let out = ok(&lsmooth(&[
            "loss",
            "--logits",
            &logits,
            "--targets",
            &labels,
            "--smoothing",
            "0.1",
        ]));
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        v["loss"].as_f64().unwrap()
    };
    let npz = run(f("arrays.npz:logits"), f("arrays.npz:labels"));
    assert!(npz.is_finite() && npz > 0.0);
    assert_eq!(
        run(f("tensors.safetensors:logits"), f("tensors.safetensors:labels")),
        npz
    );
    assert_eq!(run(f("dict.pt:logits"), f("dict.pt:labels")), npz);
    assert_eq!(run(f("tensor.pt"), f("arrays.npz:labels")), npz);
    let cal = |logits: String| {
        let out = ok(&lsmooth(&[
            "calibrate",
            "--logits",
            &logits,
            "--labels",
            &f("dict.pt:labels"),
            "--json",
        ]));
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        (v["nll"].as_f64().unwrap(), v["accuracy"].as_f64().unwrap())
    };
    assert_eq!(cal(f("dict.pt:logits")), cal(f("single.npz")));
}

// ---- Fuzzing: each reader on random bytes and on mutated fixtures. ----

fn check(bytes: &[u8], name: &str, key: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let spec = match key {
        Some(k) => PathBuf::from(format!("{}:{k}", path.display())),
        None => path.clone(),
    };
    for want in [Want::F32, Want::I64] {
        let (r, peak) = peak_bytes(|| read_array(&spec, want, "an array"));
        match &r {
            Ok(a) => {
                let n: usize = a.shape.iter().product();
                let len = match &a.data {
                    Data::F32(v) => v.len(),
                    Data::Int(v) => v.len(),
                };
                assert_eq!(len, n, "{name}: {:?}", a.shape);
            }
            Err(e) => {
                let e = e.to_string();
                assert!(
                    !e.contains('\n') && e.starts_with(&path.display().to_string()),
                    "{name}: {e}"
                );
            }
        }
        // Values widen to at most 8 bytes from at least 1; a deflated member may expand 1032-fold; the zip
        // reader's buffers and the decoder's block are bounded too.
        assert!(
            peak <= 1032 * 8 * bytes.len() + (4 << 20),
            "{name}: peak {peak} bytes for a {}-byte file",
            bytes.len()
        );
    }
}

fn mutate(mut v: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, how, byte) in edits {
        if v.is_empty() {
            break;
        }
        let i = at % v.len();
        match how % 4 {
            0 => v[i] = byte,
            1 => v[i] ^= 1 << (byte % 8),
            2 => v.truncate(i),
            _ => v.insert(i, byte),
        }
    }
    v
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&bytes, "x.pt", None);
        check(&bytes, "x.safetensors", Some("logits"));
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend(&bytes);
        check(&zip, "x.npz", None);
        let mut st = (bytes.len() as u64).to_le_bytes().to_vec();
        st.extend(&bytes);
        check(&st, "y.safetensors", None);
    }

    #[test]
    fn mutated_npz(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..5)) {
        check(&mutate(fixture("arrays.npz"), &edits), "a.npz", Some("logits"));
        check(&mutate(fixture("compressed.npz"), &edits), "c.npz", Some("wide"));
    }

    #[test]
    fn mutated_safetensors(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..5)) {
        check(&mutate(fixture("tensors.safetensors"), &edits), "t.safetensors", Some("logits_bf16"));
        check(&mutate(fixture("single.safetensors"), &edits), "s.safetensors", None);
    }

    #[test]
    fn mutated_torch(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..5)) {
        check(&mutate(fixture("dict.pt"), &edits), "d.pt", Some("logits"));
        check(&mutate(fixture("views.pt"), &edits), "v.pt", Some("strided"));
        check(&mutate(fixture("tensor.pt"), &edits), "t.pt", None);
    }
}

#[test]
fn the_pickle_of_a_torch_file_mutated_byte_by_byte() {
    // Every byte of dict.pt's pickle set to a few values: the pickle machine meets each opcode position with
    // every kind of damage (a zip whose CRC no longer matches is refused before the pickle is read, so the CRC
    // is recomputed here by rewriting the member).
    let bytes = fixture("dict.pt");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
    let names: Vec<String> = archive.file_names().map(|n| n.unwrap().into_owned()).collect();
    let mut members = Vec::new();
    for n in &names {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_name(n).unwrap(), &mut data).unwrap();
        members.push((n.clone(), data));
    }
    let pkl = members.iter().position(|(n, _)| n.ends_with("data.pkl")).unwrap();
    let len = members[pkl].1.len();
    for at in 0..len {
        for value in [0x00u8, 0x28, 0x2e, 0x71, 0x85, 0xff] {
            let mut m = members.clone();
            m[pkl].1[at] = value;
            check(&rezip(&m), "p.pt", Some("logits"));
        }
    }
}

/// A zip archive of `members`, stored, as torch writes them.
fn rezip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        out.start_file(name.as_str(), options).unwrap();
        out.write_all(data).unwrap();
    }
    out.finish().unwrap().into_inner()
}
