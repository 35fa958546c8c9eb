//! Unit tests of the pickle machine.

use super::*;

#[test]
fn small_pickles() {
    // pickle.dumps({'a': (1, -2, 3.5), 'b': [True, None]}, protocol=2)
    let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x87q\x02X\x01\x00\x00\x00bq\x03]q\x04(\x88Neu.";
    let v = load(p).unwrap();
    let Value::Dict(d) = &*v else { panic!("{v:?}") };
    let d = d.borrow();
    assert_eq!(d.len(), 2);
    assert!(
        matches!(&*d[0].1, Value::Tuple(t) if matches!(&*t[1], Value::Int(-2)) && matches!(&*t[2], Value::Float(x) if *x == 3.5))
    );
    assert!(matches!(&*d[1].1, Value::List(l) if l.borrow().len() == 2));
}

#[test]
fn deep_nesting_and_garbage() {
    // A tuple of a tuple of ... of a list, a million deep: evaluated and dropped without overflowing the stack.
    let mut p = b"\x80\x02]".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    p.push(b'.');
    assert!(matches!(&*load(&p).unwrap(), Value::Tuple(_)));
    assert!(load(b"\x80\x02\xff.")
        .unwrap_err()
        .what
        .contains("unsupported pickle opcode 0xff"));
    assert!(load(b"\x80\x02K").unwrap_err().what.contains("ends early"));
    assert!(load(b"h\x05.").unwrap_err().what.contains("memo key 5"));
}
