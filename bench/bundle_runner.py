"""The runner inside a `bench bundle`: needs Python, numpy and the runtime-only TVM beside it, nothing
else (no bench, no TVM compiler, no NVRTC). It loads each compiled library, runs the bundle's seeded
inputs, checks the outputs against the stored reference outputs, times the forward pass and prints
one table; results.json gets every figure.

    python3 run.py [--min-time-s 1.0] [--warmup 10] [--out results.json]

This file is copied into the bundle as run.py; it must not import bench.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = "bundle.json"
CUDA_LOAD_ERROR = ""


def _import_tvm():
    sys.path.insert(0, str(HERE / "runtime"))
    import tvm  # the runtime-only copy beside this file
    from tvm.runtime import vm

    global CUDA_LOAD_ERROR
    CUDA_LOAD_ERROR = load_cuda_runtime(tvm)
    return tvm, vm


def load_cuda_runtime(tvm) -> str:
    """A runtime-only TVM does not load its CUDA runtime library (the full package loads it while
    registering its CUDA backend): load it, so that tvm.cuda() exists. Returns why not, if it fails
    (no driver, no libcudart: then CUDA cells are skipped)."""
    import ctypes

    if "tvm_runtime_cuda" in tvm.base._LOADED_LIBS:
        return ""
    lib = Path(tvm.base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent / "libtvm_runtime_cuda.so"
    try:
        tvm.base._LOADED_LIBS["tvm_runtime_cuda"] = ctypes.CDLL(str(lib), mode=ctypes.RTLD_LOCAL)
        return ""
    except OSError as e:
        return str(e)


def _load_npz(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        its: list[dict[str, np.ndarray]] = [{} for _ in range(meta["iterations"])]
        for key in z.files:
            if key != "__meta__":
                i, name = key.split("/", 1)
                its[int(i)][name] = z[key]
    return its


def source_key(code: str) -> str:
    """The name of a CUDA module's cubin: the sha256 of its source."""
    return hashlib.sha256(code.encode()).hexdigest()


def serve_cubins(cubin_dir: Path) -> None:
    """TVM compiles CUDA source when a library loads; answer it with the cubins built ahead of time
    (named by the sha256 of the source). A library with a single CUDA module gets its one cubin even
    if the source text were to differ."""
    import tvm_ffi

    cubins = {p.stem: p for p in cubin_dir.glob("*.cubin")}

    def callback(code, *_):
        path = cubins.get(source_key(code)) or (next(iter(cubins.values())) if len(cubins) == 1 else None)
        if path is None:
            raise RuntimeError(f"no cubin for this CUDA module in {cubin_dir}")
        return bytearray(path.read_bytes())

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", callback, override=True)


def _flatten(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    return [a for item in out for a in _flatten(item)]


POLYGRAPHY_EPSILON = 2.220446049250313e-16  # Polygraphy adds it to the candidate's zeros before dividing


def judge(pairs: list[tuple[np.ndarray, np.ndarray]], tol: dict) -> dict:
    """The suite's rule (bench.validate.compare), repeated here: this file runs where neither bench
    nor Polygraphy is installed. Per element, Polygraphy's `elemwise` check: an element fails when
    its absolute error exceeds atol and its error relative to the candidate's value (zeros raised
    by POLYGRAPHY_EPSILON) exceeds rtol, NaN failing both. Cosine over every output of every input
    batch pooled, judged against min_cosine unless either side is all zeros (then undefined, and
    the elementwise rule alone decides). `pairs` holds (reference, candidate) arrays."""
    why, abs_errs, refs, gots = [], [], [], []
    elementwise = True
    for ref, got in pairs:
        if ref.shape != got.shape:
            return {"ok": False, "why": f"shape {got.shape} != reference {ref.shape}", "max_abs_err": float("inf"), "cosine": 0.0}
        r64, g64 = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        if not np.all(np.isfinite(g64)):
            why.append("NaN or Inf in the outputs")
        with np.errstate(all="ignore"):
            abs_err = np.abs(r64 - g64)
            rel_err = abs_err / np.abs(np.where(g64 == 0, g64 + POLYGRAPHY_EPSILON, g64))
            bad = ((abs_err > tol["atol"]) | np.isnan(abs_err)) & ((rel_err > tol["rtol"]) | np.isnan(rel_err))
        elementwise = elementwise and not bool(bad.any())
        abs_errs.append(abs_err[~np.isnan(abs_err)])
        refs.append(r64)
        gots.append(g64)
    r, g = np.concatenate(refs), np.concatenate(gots)
    denom = float(np.linalg.norm(r) * np.linalg.norm(g))
    cosine = float(r @ g / denom) if denom > 0 else float("nan")
    if not elementwise:
        why.append(f"elements beyond atol={tol['atol']:g} and rtol={tol['rtol']:g}")
    if denom > 0 and not cosine >= tol["min_cosine"]:
        why.append(f"cosine {cosine:.6f} below {tol['min_cosine']:g}")
    errs = np.concatenate(abs_errs)
    return {"ok": not why, "why": "; ".join(why), "max_abs_err": float(errs.max()) if errs.size else float("nan"), "cosine": cosine}


def _runs_on(arch: str, device: str) -> bool:
    """bench.gpu.arch_runs_on, repeated here: this file runs where bench is not installed."""
    a, d = int(arch[3:].rstrip("af")), int(device[3:].rstrip("af"))
    return a // 10 == d // 10 and d >= a if arch.endswith("f") else a == d


def run_cell(tvm, vm, cell: dict, args) -> dict:
    row = {k: cell[k] for k in ("model", "backend", "precision", "batch_size", "device", "arch")}
    dev = tvm.cuda(0) if cell["device"] == "cuda" else tvm.cpu(0)
    if not dev.exist:
        why = CUDA_LOAD_ERROR if cell["device"] == "cuda" and CUDA_LOAD_ERROR else f"no {cell['device']} device here"
        return {**row, "status": "skipped", "error": why}
    if cell["device"] == "cuda":
        seen = "sm_" + dev.compute_version.replace(".", "")
        if not _runs_on(cell["arch"], seen):
            return {**row, "status": "skipped", "error": f"built for {cell['arch']}, this device is {seen}"}
        row.update(device_name=dev.device_name, driver=str(dev.driver_version))
        serve_cubins(HERE / cell["library"] / "cubins")
    machine = vm.VirtualMachine(tvm.runtime.load_module(str(HERE / cell["library"] / "lib.so")), dev)
    main = machine["main"]
    inputs, refs = _load_npz(HERE / cell["inputs"]), _load_npz(HERE / cell["reference"])
    pairs = []
    for feed, ref in zip(inputs, refs):
        args_ = [tvm.runtime.tensor(np.ascontiguousarray(feed[name]), device=dev) for name in cell["input_names"]]
        outs = _flatten(main(*args_))
        pairs += [(ref[name], got) for name, got in zip(cell["output_names"], outs)]
    verdict = judge(pairs, cell["tolerance"])
    row.update(accuracy_ok=verdict["ok"], max_abs_err=verdict["max_abs_err"], cosine=verdict["cosine"], accuracy_note=verdict["why"])
    # Timing: inputs resident on the device; the clock waits for the device before every read.
    resident = [tvm.runtime.tensor(np.ascontiguousarray(inputs[0][name]), device=dev) for name in cell["input_names"]]

    def clock() -> int:
        dev.sync()
        return time.perf_counter_ns()

    for _ in range(args.warmup):
        main(*resident)
    samples: list[int] = []
    start = clock()
    while len(samples) < args.min_iterations or clock() - start < args.min_time_s * 1e9:
        t0 = clock()
        main(*resident)
        samples.append(clock() - t0)
        if len(samples) >= args.max_iterations:
            break
    ms = np.asarray(samples, dtype=np.int64) / 1e6
    row.update(status="ok", iterations=len(samples), p50_ms=float(np.median(ms)), p90_ms=float(np.percentile(ms, 90)),
               min_ms=float(ms.min()), mean_ms=float(ms.mean()),
               throughput_ips=cell["batch_size"] / float(ms.mean() / 1e3))  # as the suite's rows: batch / mean latency
    if cell.get("gflop"):
        row["achieved_gflops"] = cell["gflop"] / (row["p50_ms"] / 1e3)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--min-iterations", type=int, default=20)
    ap.add_argument("--max-iterations", type=int, default=100_000)
    ap.add_argument("--min-time-s", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()
    manifest = json.loads((HERE / MANIFEST).read_text())
    tvm, vm = _import_tvm()
    rows = []
    for cell in manifest["cells"]:
        try:
            row = run_cell(tvm, vm, cell, args)
        except Exception as e:  # one cell never loses the rest
            row = {k: cell[k] for k in ("model", "backend", "precision", "batch_size", "device", "arch")}
            row.update(status="failed", error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300])
        rows.append(row)
        print(_line(row), flush=True)
    env = {"python": platform.python_version(), "machine": platform.machine(), "tvm": getattr(tvm, "__version__", "?"),
           "runtime_only": bool(getattr(tvm.base, "_RUNTIME_ONLY", False)), "numpy": np.__version__}
    args.out.write_text(json.dumps({"environment": env, "bundle": manifest["created"], "rows": rows}, indent=2))
    print(f"environment: {env}")
    bad = [r for r in rows if r["status"] == "ok" and not r["accuracy_ok"]]
    return 1 if bad else 0


def _line(r: dict) -> str:
    head = f"{r['model']:<22} {r['backend']:<9} {r['precision']:<5} b{r['batch_size']:<3} {r['device']:<4} {r.get('arch') or '':<6}"
    if r["status"] != "ok":
        return f"{head} {r['status']}: {r.get('error')}"
    acc = "ok" if r["accuracy_ok"] else f"DRIFTED ({r['accuracy_note']})"
    gf = f" {r['achieved_gflops']:.1f} GFLOP/s" if r.get("achieved_gflops") else ""
    return (f"{head} p50 {r['p50_ms']:.4f} ms  p90 {r['p90_ms']:.4f} ms  n={r['iterations']}  "
            f"{r['throughput_ips']:.1f} items/s{gf}  max_abs_err {r['max_abs_err']:.2e}  cosine {r['cosine']:.6f}  {acc}"
            + (f"  [{r.get('device_name')}]" if r.get("device_name") else ""))


if __name__ == "__main__":
    sys.exit(main())
