use super::*;

fn p() -> &'static Path {
    Path::new("x.npy")
}

#[test]
fn round_trip_f32() {
    let bytes = encode_f32(&[2, 3], &[1.0, -2.5, 3.0, 0.0, 1e-8, f32::INFINITY]);
    assert_eq!(
        bytes.len(),
        128 + 24,
        "a header padded to 128 bytes, as numpy writes it, then 6 f32 values"
    );
    let a = parse(p(), &bytes).unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.data, Data::F32(vec![1.0, -2.5, 3.0, 0.0, 1e-8, f32::INFINITY]));
    let s = parse(p(), &encode_f32(&[], &[4.0])).unwrap();
    assert_eq!(s.shape, Vec::<usize>::new());
    let v = parse(p(), &encode_f32(&[1], &[4.0])).unwrap();
    assert_eq!(v.shape, vec![1]);
}

#[test]
fn integer_dtypes_and_endianness() {
    let le = encode("{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }", |o| {
        for v in [-1i16, 300, 7] {
            o.extend_from_slice(&v.to_le_bytes());
        }
    });
    assert_eq!(parse(p(), &le).unwrap().data, Data::Int(vec![-1, 300, 7]));
    let be = encode("{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", |o| {
        for v in [-5i64, 1 << 40] {
            o.extend_from_slice(&v.to_be_bytes());
        }
    });
    assert_eq!(parse(p(), &be).unwrap().data, Data::Int(vec![-5, 1 << 40]));
    let u8s = encode("{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", |o| {
        o.extend([0, 255])
    });
    assert_eq!(parse(p(), &u8s).unwrap().data, Data::Int(vec![0, 255]));
    let big = encode("{'descr': '<u8', 'fortran_order': False, 'shape': (1,), }", |o| {
        o.extend_from_slice(&u64::MAX.to_le_bytes())
    });
    let e = parse(p(), &big).unwrap_err().to_string();
    assert!(e.contains("does not fit in int64") && e.contains("offset 128"), "{e}");
}

#[test]
fn truncated_and_malformed_files_name_the_offset() {
    let good = encode_f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let e = parse(p(), &good[..good.len() - 3]).unwrap_err().to_string();
    assert!(
        e.starts_with("x.npy: byte offset 141: truncated") && e.contains("needs 16 data bytes"),
        "{e}"
    );
    let e = parse(p(), &good[..5]).unwrap_err().to_string();
    assert!(e.contains("too short") && e.contains("offset 5"), "{e}");
    let e = parse(p(), &good[..40]).unwrap_err().to_string();
    assert!(e.contains("ends inside the header"), "{e}");
    let mut bad = good.clone();
    bad[0] = b'P';
    let e = parse(p(), &bad).unwrap_err().to_string();
    assert!(e.contains("magic") && e.contains("offset 0"), "{e}");
    // numpy reads the data and ignores what follows it.
    let mut extra = good.clone();
    extra.push(0);
    assert_eq!(parse(p(), &extra).unwrap().data, Data::F32(vec![1.0, 2.0, 3.0, 4.0]));
    // Fortran order, as numpy reads it: column-major data of shape (2, 3).
    let f = encode("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", |o| {
        for v in [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0] {
            o.extend_from_slice(&v.to_le_bytes());
        }
    });
    assert_eq!(
        parse(p(), &f).unwrap().data,
        Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    );
    let c = encode("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", |o| {
        o.extend([0; 8])
    });
    assert!(parse(p(), &c)
        .unwrap_err()
        .to_string()
        .contains("unsupported dtype '<c8'"));
}

fn header_err(dict: &str) -> String {
    parse(p(), &encode(dict, |o| o.extend([0; 64])))
        .unwrap_err()
        .to_string()
}

#[test]
fn non_ascii_and_control_characters_in_the_header_are_errors_on_one_line() {
    // A non-ASCII character in the dtype (it panicked when the dtype parser sliced bytes of a &str).
    let e = header_err("{'descr': '<f\u{e9}4', 'fortran_order': False, 'shape': (2,), }");
    // Version 1.0 headers are latin-1, as numpy reads them: the UTF-8 bytes of U+00E9 are two characters.
    assert!(e.contains("unsupported dtype '<f\u{c3}\u{a9}4'"), "{e}");
    // A newline and an ESC sequence are shown escaped: the message stays one line and inert.
    let e = header_err("{'descr': '<f4\n\u{1b}[31m', 'fortran_order': False, 'shape': (2,), }");
    assert!(
        !e.contains('\n') && !e.contains('\u{1b}') && e.contains("\\u{1b}"),
        "{e}"
    );
    let e = header_err("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\u{1}");
    assert!(!e.chars().any(char::is_control), "{e}");
}

#[test]
fn the_header_is_read_as_numpy_reads_it() {
    // The last of duplicate keys wins (it read the first one, and the data with the wrong byte order).
    let be = encode(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'descr': '>f4'}",
        |o| o.extend_from_slice(&1.5f32.to_be_bytes()),
    );
    assert_eq!(parse(p(), &be).unwrap().data, Data::F32(vec![1.5]));
    for (dict, needle) in [
        (
            "{'descr': '<f4', 'fortran_order': 1, 'shape': (2,), }",
            "fortran_order must be True or False",
        ),
        (
            "{'descr': '<f4', 'fortran_order': None, 'shape': (2,), }",
            "fortran_order must be True or False",
        ),
        (
            "{'descr': '<f4', 'fortran_order': 'True', 'shape': (2,), }",
            "fortran_order must be True or False",
        ),
        (
            "'descr': '<f4', 'fortran_order': False, 'shape': (2,), ",
            "not a Python literal",
        ),
        (
            "{'descr': <f4, 'fortran_order': False, 'shape': (2,), }",
            "not a Python literal",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
            "unexpected 'x'",
        ),
        (
            "\u{feff}{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            "not a Python literal",
        ),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\0", "NUL"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (8,,6), }",
            "not a Python literal",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "non-negative",
        ),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }", "tuple"),
        ("{'descr': '<f4', 'shape': (2,), }", "missing fortran_order"),
    ] {
        let e = header_err(dict);
        assert!(e.contains(needle) && e.contains("byte offset"), "{dict:?}: {e}");
    }
    let mut v17 = encode_f32(&[1], &[1.0]);
    v17[7] = 7;
    let e = parse(p(), &v17).unwrap_err().to_string();
    assert!(e.contains("version 1.7") && e.contains("offset 6"), "{e}");
}
