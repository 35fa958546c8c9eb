#!/usr/bin/env python3
"""Writes crates/lsmooth/tests/data/formats/: small array files written by numpy (np.savez, np.savez_compressed),
the safetensors package (safetensors.torch.save_file) and torch.save, and expected.json, what each reference
reader (np.load, safetensors.torch.load_file, torch.load) reads from every FILE[:NAME] lsmooth accepts, or that
lsmooth must refuse it. tests/formats.rs checks lsmooth's readers against it.

Needs numpy, torch and safetensors (the test environment: .venv/bin/python scripts/gen_array_fixtures.py).
Deterministic up to the zip timestamps torch and numpy write."""
import json
import pathlib

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/lsmooth/tests/data/formats"
OUT.mkdir(parents=True, exist_ok=True)
g = torch.Generator().manual_seed(20261206)
logits = torch.randn(4, 5, generator=g) * 3
labels = torch.tensor([0, 4, 2, 1])
cases = []


def expect(spec, array, file_of=None):
    """What lsmooth must read for `spec`: dtype name, shape and values as the reference reader gave them."""
    if isinstance(array, torch.Tensor) and array.dtype == torch.bfloat16:
        dtype, a = "bfloat16", array.float().numpy()
    elif isinstance(array, torch.Tensor):
        dtype = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                 torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
                 torch.uint8: "uint8"}[array.dtype]
        a = array.numpy()
    else:
        a = np.asarray(array)
        dtype = a.dtype.name
    kind = "float" if dtype.startswith(("float", "bfloat")) else "int"
    values = a.astype(np.float64).ravel(order="C").tolist() if kind == "float" else a.astype(np.int64).ravel().tolist()
    cases.append({"spec": spec, "dtype": dtype, "shape": list(a.shape), "values": values})


def refuse(spec, because):
    cases.append({"spec": spec, "refused": because})


# numpy: savez (stored) and savez_compressed (deflated), with a Fortran-order, a float64 and a float16 array.
x = logits.numpy()
np.savez(OUT / "arrays.npz", logits=x, labels=labels.numpy())
for name, ref in np.load(OUT / "arrays.npz").items():
    expect(f"arrays.npz:{name}", ref)
expect("arrays.npz:logits.npy", np.load(OUT / "arrays.npz")["logits"])
refuse("arrays.npz", "holds 2 arrays")
refuse("arrays.npz:missing", "no array named 'missing'")
np.savez_compressed(OUT / "compressed.npz", fortran=np.asfortranarray(x), wide=x.astype(np.float64),
                    half=x.astype(np.float16), small=labels.numpy().astype(np.uint8))
for name, ref in np.load(OUT / "compressed.npz").items():
    expect(f"compressed.npz:{name}", ref)
np.savez(OUT / "single.npz", x)
expect("single.npz", np.load(OUT / "single.npz")["arr_0"])
expect("single.npz:arr_0", np.load(OUT / "single.npz")["arr_0"])

# safetensors, written by the safetensors package from torch tensors (bf16 and f16 included).
save_file({"logits": logits, "labels": labels, "logits_bf16": logits.to(torch.bfloat16),
           "logits_f16": logits.to(torch.float16), "flags": torch.tensor([True, False])},
          OUT / "tensors.safetensors", metadata={"producer": "gen_array_fixtures.py"})
for name, ref in load_file(OUT / "tensors.safetensors").items():
    if name == "flags":
        refuse(f"tensors.safetensors:{name}", "unsupported dtype BOOL")
    else:
        expect(f"tensors.safetensors:{name}", ref)
refuse("tensors.safetensors", "holds 5 tensors")
save_file({"only": logits}, OUT / "single.safetensors")
expect("single.safetensors", load_file(OUT / "single.safetensors")["only"])

# torch.save: a tensor, a dict with a non-tensor value, a state dict, views (a transpose, a strided slice of a
# larger storage, a row with an offset), bfloat16, an nn.Parameter, and the legacy format.
torch.save(logits, OUT / "tensor.pt")
expect("tensor.pt", torch.load(OUT / "tensor.pt"))
refuse("tensor.pt:logits", "holds a single tensor")
torch.save({"logits": logits, "labels": labels, "step": 3}, OUT / "dict.pt")
for name, ref in torch.load(OUT / "dict.pt").items():
    if isinstance(ref, torch.Tensor):
        expect(f"dict.pt:{name}", ref)
refuse("dict.pt:step", "is an int, not a tensor")
refuse("dict.pt", "holds a dict of 2 tensors")
torch.manual_seed(0)
linear = torch.nn.Linear(5, 3)
torch.save(linear.state_dict(), OUT / "state.pth")
for name, ref in torch.load(OUT / "state.pth").items():
    expect(f"state.pth:{name}", ref)
big = torch.arange(60, dtype=torch.float32).reshape(6, 10)
torch.save({"transposed": logits.t(), "strided": big[1:5, ::3], "row": big[2], "bf16": logits.to(torch.bfloat16),
            "int32": labels.to(torch.int32)}, OUT / "views.pt")
for name, ref in torch.load(OUT / "views.pt").items():
    expect(f"views.pt:{name}", ref.contiguous())
torch.save(torch.nn.Parameter(logits.clone()), OUT / "parameter.pt")
expect("parameter.pt", torch.load(OUT / "parameter.pt").detach())
torch.save(logits, OUT / "legacy.pt", _use_new_zipfile_serialization=False)
refuse("legacy.pt", "legacy format")

(OUT / "expected.json").write_text(json.dumps({
    "generator": "scripts/gen_array_fixtures.py",
    "torch": torch.__version__, "numpy": np.__version__,
    "cases": cases,
}, indent=1) + "\n")
print(f"{len(cases)} cases, {sum(p.stat().st_size for p in OUT.iterdir())} bytes in {OUT}")
