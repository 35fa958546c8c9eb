#!/usr/bin/env python3
"""A bounded fuzz run of the lsmooth binary on mutated .npy files and MNIST-format directories.

Each case runs one command under a time limit and an address-space limit and must end with exit 0, or exit 2 and
a one-line message without control characters: no panic, no abort or signal, no hang, no memory blow-up. For
`lsmooth loss` the verdict is also compared with numpy's: a logits file that numpy.load reads as a 2-D float32 or
float64 array of at least 2 columns must be accepted with numpy's shape; one numpy refuses must be refused. Class
weights drawn from the float32 extremes (near its maximum, subnormal, zero, spanning up to 2^100, and invalid:
negative, inf, NaN) must be refused exactly when invalid, and otherwise give the float64 definition's mean loss, computed here with numpy,
wherever that is finite in float32.

    python3 scripts/fuzz_cli.py [--binary target/release/lsmooth] [--seconds 180] [--seed 1]

Needs numpy. Prints a summary line and exits 1 on the first failure, with the failing input kept in --keep."""
import argparse, gzip, json, os, random, resource, shutil, struct, subprocess, sys, tempfile, time, warnings

import numpy as np

warnings.simplefilter("ignore")
LIMIT_AS = 4 << 30


def limits():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def npy(header, body, version=(1, 0)):
    h = header.encode("latin1" if version != (3, 0) else "utf8", "replace")
    ln = struct.pack("<H", len(h)) if version == (1, 0) else struct.pack("<I", len(h))
    return b"\x93NUMPY" + bytes(version) + ln + h + body


INSERT = [b"'", b'"', b" ", b",", b":", b"(", b")", b"{", b"}", b"\n", b"#", b"\\", b"L", b"0", b"9", b"-", b"True",
          b"\x00", b"\xff", b"\x1b", b"'descr': '>f4'", b"'shape': (2, 3)", b"\xc3\xa9"]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        i = rng.randrange(len(data) + 1)
        op = rng.random()
        if op < 0.3 and data:
            del data[min(i, len(data) - 1)]
        elif op < 0.6:
            data[i:i] = rng.choice(INSERT)
        elif op < 0.9 and data:
            data[min(i, len(data) - 1)] = rng.randrange(256)
        else:
            del data[i:]
    return bytes(data)


def numpy_verdict(path):
    try:
        a = np.load(path)
    except Exception:  # noqa: BLE001
        return None
    return a


def declared_subarray(path):
    """Whether the header declares a subarray dtype (`'6f8'`): lsmooth refuses those by name (docs/ROBUSTNESS.md),
    while numpy flattens them into the array's shape, and on a short file can even land on the declared shape."""
    try:
        with open(path, "rb") as fp:
            version = np.lib.format.read_magic(fp)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return read(fp)[2].subdtype is not None
    except Exception:  # noqa: BLE001
        return False


def run(binary, args, timeout):
    t = time.time()
    try:
        p = subprocess.run([binary] + args, capture_output=True, timeout=timeout, preexec_fn=limits)
    except subprocess.TimeoutExpired:
        return None, "timeout", time.time() - t
    return p, None, time.time() - t


def check(p, problem, args):
    if problem:
        return f"{problem}: {args}"
    err = p.stderr.decode("utf8", "replace")
    if p.returncode not in (0, 2):
        return f"exit {p.returncode}: {args}\n{err}"
    if "panicked" in err:
        return f"panic: {args}\n{err}"
    if p.returncode == 2:
        line = err.rstrip("\n")
        if "\n" in line or any(ord(c) < 32 for c in line):
            return f"not one clean line: {args}\n{err!r}"
    return None


# The largest weight of a vector; the others lie within 2^-100 of it (docs/DESIGN.md: weights more than about
# 2^-126 below the largest lose precision), some are 0.
ANCHORS = [float(np.finfo(np.float32).max), 1e38, 1e36, 3.0, 1e-30, float(np.finfo(np.float32).tiny), 1e-40, 1e-44]
INVALID = np.array([-1.0, -1e-45, np.inf, np.nan], dtype=np.float32)


def weights_case(rng, tmp, a):
    """`lsmooth loss --weights` on weights from EXTREMES (sometimes one invalid), against numpy's float64 mean."""
    n, k = rng.randrange(1, 9), rng.choice([2, 3, 7, 40, 300, 5000])
    gen = np.random.default_rng(rng.randrange(1 << 32))
    logits = (gen.standard_normal((n, k)) * rng.choice([1, 4, 30])).astype(np.float32)
    y = gen.integers(0, k, n)
    span = rng.choice([0, 10, 60, 100])
    w = (rng.choice(ANCHORS) * np.exp2(-gen.uniform(0, span, k))).astype(np.float32)
    w[gen.random(k) < 0.2] = 0
    invalid = rng.random() < 0.15
    if invalid:
        w[rng.randrange(k)] = rng.choice(list(INVALID))
    eps = rng.choice([0.0, 0.1, 0.3])
    paths = [os.path.join(tmp, f) for f in ("wl.npy", "wy.npy", "ww.npy")]
    for path, arr in zip(paths, (logits, y, w)):
        np.save(path, arr)
    args = ["loss", "--logits", paths[0], "--targets", paths[1], "--weights", paths[2], "--smoothing", str(eps),
            "--spread", "uniform"]
    p, problem, _ = run(a.binary, args, 30)
    failure = check(p, problem, args)
    if failure:
        return failure
    if invalid:
        return None if p.returncode == 2 else f"invalid weights accepted: {w.tolist()}\n{args}"
    if p.returncode != 0:
        return f"valid weights refused: {p.stderr}\n{args}"
    # F.cross_entropy(weight=w, label_smoothing=eps): -sum_c w_c q_ic log p_ic, q = (1 - eps) onehot + eps / K,
    # over sum_i w_{y_i}, in float64.
    z = logits.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    w64 = w.astype(np.float64)
    rows = -(1 - eps) * w64[y] * logp[np.arange(n), y] - eps / k * (w64 * logp).sum(1)
    denominator = w64[y].sum()
    if denominator == 0:
        return None
    want = rows.sum() / denominator
    got = json.loads(p.stdout)["loss"]
    if not np.isfinite(np.float32(want)):
        return None
    # Relative, plus the round-off of `lse - z_y` in float64 (a row fit to 1e-13 keeps few digits of its loss).
    mass = ((1 - eps) * w64[y] + eps / k * w64.sum()).sum() / denominator
    tolerance = 2e-5 * abs(want) + 64 * 2.0**-52 * np.abs(z).max() * mass + 1e-44
    if not isinstance(got, (int, float)) or abs(got - want) > tolerance:
        return f"loss {got}, the float64 definition gives {want}: weights {w.tolist()}\n{args}"
    return None


def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/lsmooth")
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", default="fuzz-failure")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp()
    labels = os.path.join(tmp, "y.npy")
    np.save(labels, np.array([0, 1, 2, 0], dtype=np.int64))
    base = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    good = open(os.path.join(tmp, "g.npy"), "wb")
    np.save(good, base)
    good.close()
    valid = open(os.path.join(tmp, "g.npy"), "rb").read()
    bases = [valid, npy("{'descr': '>f8', 'fortran_order': True, 'shape': (4, 3), }", base.astype(">f8").tobytes("F"))]
    mnist_images = idx([30, 4, 4], bytes(rng.randrange(256) for _ in range(30 * 16)))
    mnist_labels = idx([30], bytes(rng.randrange(10) for _ in range(30)))
    counts = {"npy": 0, "npy_accepted": 0, "idx": 0, "calibrate": 0, "weights": 0}
    end = time.time() + a.seconds
    failure = None
    while time.time() < end and failure is None:
        kind = rng.random()
        case = os.path.join(tmp, "case")
        if kind < 0.15:
            failure = weights_case(rng, tmp, a)
            counts["weights"] += 1
        elif kind < 0.75:
            data = mutate(rng, rng.choice(bases))
            path = case + ".npy"
            open(path, "wb").write(data)
            args = ["loss", "--logits", path, "--targets", labels, "--smoothing", "0.1"]
            p, problem, _ = run(a.binary, args, 20)
            failure = check(p, problem, args)
            counts["npy"] += 1
            if failure is None:
                arr = numpy_verdict(path)
                ok_np = (arr is not None and arr.ndim == 2 and arr.dtype.kind == "f" and arr.dtype.itemsize in (2, 4, 8)
                         and arr.shape == (4, arr.shape[1]) and arr.shape[1] >= 2 and not arr.dtype.fields
                         and not declared_subarray(path))
                if p.returncode == 0:
                    counts["npy_accepted"] += 1
                    out = json.loads(p.stdout)
                    if arr is None or (out["n"], out["k"]) != arr.shape:
                        failure = f"lsmooth read what numpy does not (or another shape): {path}\n{p.stdout}"
                elif ok_np:
                    failure = f"numpy reads {arr.dtype} {arr.shape}, lsmooth refused: {p.stderr}"
            if failure is None and rng.random() < 0.2:
                args = ["calibrate", "--logits", path, "--labels", labels, "--fit-temperature", path, labels, "--json"]
                p, problem, _ = run(a.binary, args, 20)
                failure = check(p, problem, args)
                counts["calibrate"] += 1
        else:
            d = os.path.join(tmp, "mnist")
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            files = {"train-images-idx3-ubyte": mnist_images, "train-labels-idx1-ubyte": mnist_labels,
                     "t10k-images-idx3-ubyte": mnist_images, "t10k-labels-idx1-ubyte": mnist_labels}
            victim = rng.choice(list(files))
            for name, data in files.items():
                zipped = rng.random() < 0.5
                if name == victim:
                    data = gzip.compress(data) if zipped else data
                    data = mutate(rng, data)
                elif zipped:
                    data = gzip.compress(data)
                open(os.path.join(d, name + (".gz" if zipped else "")), "wb").write(data)
            out = os.path.join(tmp, "run")
            args = ["train", "--data", d, "--epochs", "1", "--hidden", "8", "--quiet", "--out", out]
            p, problem, _ = run(a.binary, args, 60)
            failure = check(p, problem, args)
            counts["idx"] += 1
        if failure:
            shutil.rmtree(a.keep, ignore_errors=True)
            shutil.copytree(tmp, a.keep)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{counts['npy']} .npy cases ({counts['npy_accepted']} accepted), {counts['calibrate']} calibrate, "
          f"{counts['idx']} IDX directories, {counts['weights']} class weight vectors: " + ("no failure" if failure is None else "FAILURE"))
    if failure:
        print(failure)
        sys.exit(1)


if __name__ == "__main__":
    main()
