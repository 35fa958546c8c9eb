#!/usr/bin/env python3
"""Generates crates/lsmooth/tests/data/npy_corpus.json: .npy files with hand-written and mutated headers, each
with what numpy.load made of it (the array, or a refusal). tests/npy_corpus.rs checks that lsmooth's reader
agrees on every one. Needs numpy (pip install numpy). Deterministic: python3 scripts/gen_npy_corpus.py"""
import json, os, random, struct, sys, tempfile, warnings
import numpy as np

warnings.simplefilter("ignore")
rng = random.Random(20261202)
SUPPORTED_KINDS = {"f": (2, 4, 8), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8)}


def npy(version, header_text, body):
    enc = "utf8" if version == (3, 0) else "latin1"
    try:
        h = header_text.encode(enc)
    except UnicodeEncodeError:
        h = header_text.encode("utf8")
    if version == (1, 0):
        if len(h) > 0xFFFF:
            h = h[:0xFFFF]
        ln = struct.pack("<H", len(h))
    else:
        ln = struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes(version) + ln + h + body


def verdict(path):
    try:
        a = np.load(path)
    except Exception as e:  # noqa: BLE001 - any refusal counts
        return {"ok": False, "numpy_error": f"{type(e).__name__}: {str(e)[:120]}"}
    d = a.dtype
    if d.kind not in SUPPORTED_KINDS or d.itemsize not in SUPPORTED_KINDS[d.kind] or d.fields or d.subdtype:
        return {"ok": False, "unsupported": d.str}
    # A subarray descr ('(2,)f4') loads as a plain array of a larger shape; lsmooth refuses subarray dtypes.
    try:
        import numpy.lib._format_impl as fmt
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            descr = fmt._read_array_header(f, version)[2]
    except Exception:  # noqa: BLE001
        descr = None
    if descr is not None and (descr.subdtype is not None or descr.fields):
        return {"ok": False, "unsupported": "subarray or structured dtype " + str(descr)}
    vals = np.ascontiguousarray(a).ravel()
    values = [float(v) for v in vals] if d.kind == "f" else [int(v) for v in vals]
    if d.kind == "u" and d.itemsize == 8 and any(v > 2**63 - 1 for v in values):
        return {"ok": False, "unsupported": "uint64 above int64"}
    if d.kind == "f" and any(v != v or v in (float("inf"), float("-inf")) for v in values):
        # JSON has no NaN/inf: store the bits instead.
        return {"ok": True, "dtype": d.str, "shape": list(a.shape), "float_bits": [
            int(np.array(v, dtype=np.float64).view(np.uint64)) for v in vals.astype(np.float64)]}
    return {"ok": True, "dtype": d.str, "shape": list(a.shape), "values": values}


BASES = [
    "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
    "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
    "{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }",
    "{'descr': '|u1', 'fortran_order': False, 'shape': (48,), }",
    "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2, 3), }",
    '{"descr": "<i2", "fortran_order": False, "shape": ()}',
    "{'shape': (4,), 'fortran_order': False, 'descr': '>i4'}",
]
HAND = [
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'descr': '>f4'}",
    "{'descr': '<f4', 'fortran_order': 1, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': None, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': 'True', 'shape': (2,), }",
    "'descr': '<f4', 'fortran_order': False, 'shape': (2,), ",
    "{'descr': <f4, 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
    "\ufeff{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\x00",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (8,,6), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2 L,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (0x2, 0o3), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (0b10, 1_0), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (02,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (00,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (+2, -0), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (True, 2), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': 2, }",
    "{'descr': '<f4', 'fortran_order': (False), 'shape': ((2),), }",
    "{'descr': '<' 'f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<' \"f\" '''4''', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': r'<f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': u'<f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': b'<f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': f'<f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '\\x3cf\\N{DIGIT FOUR}', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '\\u003cf4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '\\074f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f\\\n4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': \\\n(2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } \\\n",
    "{'descr': '<f4', # a comment\n 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } # trailing comment",
    "\n{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "\n  {'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "  {'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "\t{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "\x0c{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "\x0c  {'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "\x0b{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "  \n# c\n\n{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\r\n",
    "{'descr': '<f4',\r 'fortran_order': False, 'shape': (2,), }\r",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n  \n",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n  x",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }, ",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }{}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,),, }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,) }",
    "{'descr':'<f4','fortran_order':False,'shape':(2,)}",
    "dict(descr='<f4', fortran_order=False, shape=(2,))",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (1,)}",
    "{'descr': [1, {2: 3.5e3}, (1+2j,)], 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': {1, 2.5, -3j, None, ..., b'x'}, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': {[1]: 2}, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': {[1]}, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': -1-2j, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 1j+1, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': --1, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': -True, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': (-1)+2j, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': -(1), 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': -(-1), 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': set(), 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 1e5, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 1., 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': .5, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 1e, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 1_000.000_1e1_0j, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 007.5, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 07j, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': 123456789012345678901234567890123456789012345678901234567890, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (123456789012345678901234567890,)}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2), }",
    "{'descr': '<u8', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4 ', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'é': 1}",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } # é",
    "{'descr': '<f\u00e94', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4\n', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '\x1b[31m', 'fortran_order': False, 'shape': (2,), }",
    "{}",
    "",
    "   ",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + " " * 10000 + "\n",
    "{1: 2, True: 3, 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
    "{'descr': '<f4', # a\x00comment\n 'fortran_order': False, 'shape': (2,), }",
    "\\\n\n{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "\\\n  {'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<\\4', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '\\x0b', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), **{}}",
]
DESCRS = ["<f4", ">f4", "f4", "|f4", "=f4", "<f8", "f8", "<f2", ">f2", "e", "f", "d", "float", "float32", "double",
          "half", "<i1", "|i1", "i1", "b", "B", "<u1", "|u1", "<i2", ">i2", "h", "H", "<u2", "<i4", "i", "I", "l", "L",
          "q", "Q", "p", "P", "n", "N", "<i8", ">i8", "<u8", "int", "int64", "uint", "long", "ulong", "intp", "int_",
          "int8", "uint8", "byte", "ubyte", "short", "ushort", "intc", "uintc", "longlong", "ulonglong", "single",
          "<float32", "float32 ", "F4", "<F4", "<f3", "<f16", "<i16", "<u3", "<c16", "?", "b1", "|b1", "<U2", "|S2",
          "O", "<M8[ns]", "V4", "f4,f4", "(2,)f4", "<f4\x00", "", "<", "f", "<f 4", "<i 4", "int32", "uint32",
          "float64", "float16", "int16", "uint16", "<b", ">B", "=h", "|H", "<e", ">e", "<d", ">d",
          "<f 4", "<f+4", "<f-4", "<f\x0b4", "<f\r4", "<f04", "f 4", "< f4", "<f4 ", "<i +1", "<f 0x4", "<f 16",
          "<u 0008", "<i 3", "d ", "f\t8"] + [p + chr(c) for c in range(32) for p in ("", "<", ">")]
INSERTS = ["'", '"', " ", ",", ":", "(", ")", "{", "}", "\n", "#", "\\", "L", "0", "1", "-", "+", "True", "False",
           "None", "x", "\x00", "\t", "\x0c", "\r", "j", ".", "e", "_", "b", "r", "u", "[", "]", "'descr': '<f4'",
           "'shape': (2,)", "'fortran_order': True", "\\\n", "'''", "\\x", "\\N{", "é", "\u2028", "...", "set()"]


def mutate(h):
    h = list(h)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.random()
        i = rng.randrange(len(h) + 1)
        if op < 0.35 and h:
            del h[min(i, len(h) - 1)]
        elif op < 0.75:
            h[i:i] = list(rng.choice(INSERTS))
        elif h:
            h[min(i, len(h) - 1)] = rng.choice(INSERTS)
    return "".join(h)


def main():
    out_path = os.path.join(os.path.dirname(__file__), "..", "crates", "lsmooth", "tests", "data", "npy_corpus.json")
    headers = [(h, (1, 0)) for h in HAND] + [(h, (3, 0)) for h in HAND[:30]] + [(h, (2, 0)) for h in HAND[:20]]
    for ws in ["\x0c  ", "\x0c\t", " \x0c ", "\t\x0c", "\n\x0c ", "\n \x0c", "\n\t", "# c\n  ", "\x0c  # c\n",
               "\n\x0c", "\n\x0c\x0c", "\n \x0c", "\x0c\n", " \n\x0c", "\x0c\x0c", "\t\t"]:
        for ver in [(1, 0), (2, 0), (3, 0)]:
            headers.append((ws + BASES[0], ver))
            headers.append((ws + "{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 2), }", ver))
    for d in DESCRS:
        for shape in ["(3,)", "(2, 2)"]:
            headers.append(("{'descr': %r, 'fortran_order': False, 'shape': %s, }" % (d, shape), (1, 0)))
    for _ in range(1400):
        headers.append((mutate(rng.choice(BASES + HAND[:40])), rng.choice([(1, 0), (1, 0), (2, 0), (3, 0)])))
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npy")
        for i, (h, ver) in enumerate(headers):
            body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 4, 16, 24, 48, 49, 96])))
            # Mostly finite floats: bodies of small values (the exponent byte kept low).
            if rng.random() < 0.5:
                body = b"".join(struct.pack("<f", rng.uniform(-9, 9)) for _ in range(len(body) // 4))
            data = npy(ver, h, body)
            with open(path, "wb") as f:
                f.write(data)
            case = {"file_hex": data.hex()}
            case.update(verdict(path))
            cases.append(case)
        # Versions other than 1.0, 2.0, 3.0; magic damaged; header length past the end.
        good = npy((1, 0), BASES[0], b"\0" * 24)
        for data in [good[:6] + bytes([1, 7]) + good[8:], good[:6] + bytes([4, 0]) + good[8:], b"\x93NUMPX" + good[6:],
                     good[:8] + b"\xff\xff" + good[10:], good[:9], good[:3], b""]:
            with open(path, "wb") as f:
                f.write(data)
            case = {"file_hex": data.hex()}
            case.update(verdict(path))
            cases.append(case)
    with open(out_path, "w") as f:
        json.dump({"generator": "scripts/gen_npy_corpus.py", "numpy": np.__version__,
                   "python": sys.version.split()[0], "cases": cases}, f, indent=0)
    ok = sum(c["ok"] for c in cases)
    print(f"{len(cases)} cases, {ok} read by numpy into a supported dtype, written to {out_path}")


if __name__ == "__main__":
    main()
