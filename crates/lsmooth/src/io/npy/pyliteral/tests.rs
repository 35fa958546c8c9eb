use super::*;

fn ok(s: &str) -> Value {
    parse(s, false).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
}

fn bad(s: &str) {
    assert!(parse(s, false).is_err(), "{s:?} parsed as {:?}", parse(s, false));
}

#[test]
fn literals() {
    assert_eq!(ok("'a' \"b\" '''c'''"), Value::Str("abc".into()));
    assert_eq!(ok(r"'\x3cf\N{digit four}'"), Value::Str("<f4".into()));
    assert_eq!(
        ok("(1, -2, +0x1f, 0b1_0)"),
        Value::Tuple(vec![Value::Int(1), Value::Int(-2), Value::Int(31), Value::Int(2)])
    );
    assert_eq!(ok("((3),)"), Value::Tuple(vec![Value::Int(3)]));
    assert_eq!(ok("-(3)"), Value::Int(-3));
    assert_eq!(ok("1+2j"), Value::Complex);
    assert_eq!(
        ok("{'a': 1, 'a': 2}"),
        Value::Dict(vec![
            (Value::Str("a".into()), Value::Int(1)),
            (Value::Str("a".into()), Value::Int(2))
        ])
    );
    assert_eq!(ok("\n{}\n  \n# c\n"), Value::Dict(vec![]));
    for s in [
        "02",
        "0_",
        "1__0",
        "--1",
        "-True",
        "-(1,)",
        "1+2",
        "1j+1j",
        "{[1]: 2}",
        "{'a'}x",
        "\n  {}",
        "{}\0",
        "f'x'",
        "'a' b'b'",
        "x",
        "{'a': 1,,}",
        "\\",
        "1e",
        "{} \\\n",
    ] {
        bad(s);
    }
    assert!(parse("(2L,)", false).is_err());
    assert_eq!(
        parse("(2L, 3 L)", true).unwrap(),
        Value::Tuple(vec![Value::Int(2), Value::Int(3)])
    );
}
