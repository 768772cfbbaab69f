"""Do the verdicts resolve? False alarms and power of `bench ab` and `bench compare`, on real runs
(tiny models on ONNX Runtime, 1 thread; 4 cells: resnet18-tiny and mobilenet_v2-tiny x batch 4, 8).

1. In-run A/A: the same config as A and B of `bench ab`, RUNS times. Target: `faster`/`slower` 0
   of 4 x RUNS, `no change` at least 80% of them.
2. In-run A/B with a controlled slowdown: B's model is A's with a side branch added (Sin over a
   slice of the input, reduced and added times zero to the output), the slice's width calibrated so that B costs 10% (then 5%) more than A, measured alone first (interleaved bare
   loops in one process). Target for 10%: `slower` in at least 4 of 5 runs per cell; 5% reported.
3. Separate runs: the config run SEPARATE times as separate `bench run`s, consecutive pairs compared
   with `bench compare` (run-to-run drift from the other runs as history, as the CLI does).
   Target: `faster`/`slower` 0; `no change` reported. Also without history, for the record.
Each with its cost in seconds per cell (wall time / cells). `--hog` runs one CPU-bound process
beside it all (the calibration of the slowdowns stays on the idle machine).

Usage: python -m benchmarks.verdicts [--hog] [RUNS] [SEPARATE]   (default 5 and 6)
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper

from bench.ab import Rounds, run_ab
from bench.config import config_from_dict
from bench.history import estimate, similar_runs
from bench.results import load_run
from bench.runner import execute, plan
from bench.verdicts import compare_runs

ARCHS = ("resnet18-tiny", "mobilenet_v2-tiny")
TIMING = {"warmup": 20, "min_iterations": 200, "min_time_s": 0.25}
THRESHOLD = 0.05
BATCHES = (4, 8)
ROUNDS = Rounds(min_rounds=6, max_rounds=14, threshold=THRESHOLD)


def zoo_files(models: Path) -> dict[str, Path]:
    """The zoo models exported once, as files (A's models)."""
    cfg = config_from_dict({"name": "export", "models": [{"name": a, "source": f"zoo:{a}"} for a in ARCHS],
                            "backends": ["onnxruntime"], "batch_sizes": [1]})
    p = plan(cfg, models)
    return {a: Path(p.models[a].path) for a in ARCHS}


def slowed(src: Path, width: int, out: Path) -> Path:
    """`src` with a side branch over its input's first `width` columns (the last axis): Sin, reduced
    to a scalar and added times zero to its first output: the same outputs, more work."""
    m = onnx.load(str(src))
    g = m.graph
    x, y = g.input[0].name, g.output[0].name
    for name, v in (("slow_start", 0), ("slow_end", width), ("slow_axis", -1)):
        g.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [v]))
    g.initializer.append(helper.make_tensor("slow_zero", TensorProto.FLOAT, [], [0.0]))
    g.node.append(helper.make_node("Slice", [x, "slow_start", "slow_end", "slow_axis"], ["slow_part"]))
    g.node.append(helper.make_node("Sin", ["slow_part"], ["slow_sin"]))
    g.node.append(helper.make_node("ReduceMean", ["slow_sin"], ["slow_mean"], keepdims=0))
    g.node.append(helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nil"]))
    for n in g.node:  # the old output now feeds the Add that produces it
        n.output[:] = [f"{y}_fast" if o == y else o for o in n.output]
    g.node.append(helper.make_node("Add", [f"{y}_fast", "slow_nil"], [y]))
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


def _session(path: Path, batch: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([batch, *i.shape[1:]]).astype(np.float32)
    for _ in range(50):
        s.run(None, {i.name: x})
    return s, i.name, x


def measured_slowdown(a: Path, b: Path, batch: int) -> float:
    """B's cost over A's, measured alone: alternating rounds of 200 calls each, in this process."""
    sa, na, xa = _session(a, batch)
    sb, nb, xb = _session(b, batch)
    ta, tb = [], []
    for _ in range(15):
        for s, n, x, t in ((sa, na, xa, ta), (sb, nb, xb, tb)):
            t0 = time.perf_counter_ns()
            for _ in range(200):
                s.run(None, {n: x})
            t.append(time.perf_counter_ns() - t0)
    return statistics.median(tb) / statistics.median(ta) - 1


def calibrate(files: dict[str, Path], target: float, work: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """Per model, the branch width whose slowdown (measured alone, the mean over both batch sizes)
    is nearest `target`"""
    out, got = {}, {}
    for arch, src in files.items():
        best = None
        for width in (1, 2, 4, 6, 8, 12, 16, 20, 24, 32):
            path = slowed(src, width, work / f"{arch}-slow{int(target * 100)}-{width}.onnx")
            s = statistics.mean(measured_slowdown(src, path, b) for b in BATCHES)
            if best is None or abs(s - target) < abs(best[1] - target):
                best = (path, s)
            if s > target * 1.5:
                break
        out[arch], got[arch] = best  # type: ignore[misc]
    return out, got


def _config(name: str, files: dict[str, Path], repeats: int = 3) -> dict:
    return {"name": name, "models": [{"name": a, "source": str(p)} for a, p in files.items()], "backends": ["onnxruntime"],
            "batch_sizes": list(BATCHES), "threads": 1, "timing": TIMING, "repeats": repeats}


def in_run(label: str, a: dict, b: dict, runs: int, work: Path) -> tuple[list[pd.DataFrame], float]:
    tables, walls = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        _, _, t = run_ab(plan(config_from_dict(a), work / "models"), plan(config_from_dict(b), work / "models"),
                         work / "ab", ROUNDS, ab_id=f"{label}{i}")
        walls.append((time.perf_counter() - t0) / len(t))
        tables.append(t)
        print(f"  {label} run {i + 1}: " + ", ".join(f"{r.model} b{r.batch_size} {r.change:+.1%} [{r.ci_low:+.1%}, {r.ci_high:+.1%}] "
                                                    f"{r.verdict} ({r.rounds} rounds)" for r in t.itertuples()), flush=True)
    return tables, statistics.mean(walls)


def counts(tables: list[pd.DataFrame]) -> dict[str, int]:
    v = pd.concat(tables)["verdict"].value_counts().to_dict()
    return {k: int(v.get(k, 0)) for k in ("slower", "faster", "no change", "inconclusive", "missing")}


def separate(files: dict[str, Path], k: int, work: Path) -> tuple[dict[str, int], dict[str, int], float]:
    cfg = config_from_dict(_config("sep", files))
    dirs, walls = [], []
    for i in range(k):
        t0 = time.perf_counter()
        dirs.append(execute(plan(cfg, work / "models"), work / "separate", run_id=f"sep{i}"))
        walls.append((time.perf_counter() - t0) / 4)
    with_h, without = [], []
    for a, b in zip(dirs, dirs[1:]):
        ra, rb = load_run(a), load_run(b)
        drift = estimate(similar_runs(ra, [work / "separate"], exclude=[b]))
        with_h.append(compare_runs(ra, rb, THRESHOLD, drift=drift))
        without.append(compare_runs(ra, rb, THRESHOLD))
        print(f"  {a.name} vs {b.name}: " + ", ".join(f"{r.model} b{r.batch_size} {r.change:+.1%} [{r.ci_low:+.1%}, {r.ci_high:+.1%}] "
                                                      f"{r.verdict}" for r in with_h[-1].itertuples()), flush=True)
    return counts(with_h), counts(without), statistics.mean(walls)


def _hog() -> None:
    while True:
        pass


def main(runs: int, k: int, hog: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-verdicts-"))
    files = zoo_files(Path(tempfile.gettempdir()) / "bench-benchmark-models")
    slow10, got10 = calibrate(files, 0.10, work)
    slow5, got5 = calibrate(files, 0.05, work)
    print("controlled slowdowns, measured alone (mean of batch 4 and 8): "
          + ", ".join(f"{a} {got10[a]:+.1%} / {got5[a]:+.1%}" for a in files), flush=True)
    hogs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(1 if hog else 0)]
    for h in hogs:
        h.start()
    try:
        aa, aa_cost = in_run("aa", _config("a", files), _config("b", files), runs, work)
        ab10, ab10_cost = in_run("ab10-", _config("a", files), _config("b", slow10), runs, work)
        ab5, ab5_cost = in_run("ab5-", _config("a", files), _config("b", slow5), runs, work)
        sep_h, sep_bare, sep_cost = separate(files, k, work)
    finally:
        for h in hogs:
            h.kill()
            h.join()
    where = f"beside one CPU-bound process ({multiprocessing.cpu_count()} cores)" if hog else "idle machine"
    c = counts(aa)
    n = sum(c.values())
    ok_aa = c["faster"] + c["slower"] == 0 and c["no change"] >= 0.8 * n
    print(f"IN-RUN A/A ({where}, {runs} runs x 4 cells): {c}; {aa_cost:.1f} s per cell; target 0 faster/slower and >= 80% "
          f"no change: {'PASS' if ok_aa else 'FAIL'}")
    per_run10 = [int((t["verdict"] == "slower").sum()) for t in ab10]
    called10 = pd.concat(ab10).groupby(["model", "batch_size"])["verdict"].apply(lambda v: int((v == "slower").sum()))
    ok10 = bool((called10 >= min(4, runs)).all())
    print(f"IN-RUN A/B +10% ({where}): {counts(ab10)}; `slower` per cell over {runs} runs: {called10.to_dict()}; "
          f"{ab10_cost:.1f} s per cell; target slower in >= 4 of 5 runs per cell: {'PASS' if ok10 else 'FAIL'} ({per_run10})")
    called5 = pd.concat(ab5).groupby(["model", "batch_size"])["verdict"].apply(lambda v: int((v == "slower").sum()))
    beyond2 = int((pd.concat(ab5)["ci_low"] > 0.02).sum())
    print(f"IN-RUN A/B +5% ({where}): {counts(ab5)}; `slower` per cell: {called5.to_dict()}; {ab5_cost:.1f} s per cell (reported); "
          f"a change of about the threshold itself is `inconclusive` or `no change` by the rule; intervals wholly above +2% "
          f"(`slower` at --threshold 2%): {beyond2} of {len(pd.concat(ab5))}")
    ok_sep = sep_h["faster"] + sep_h["slower"] == 0
    print(f"SEPARATE RUNS ({where}, {k} runs, consecutive pairs): with run-to-run drift from history {sep_h}; within-run "
          f"intervals only {sep_bare}; {sep_cost:.1f} s per cell; target 0 faster/slower: {'PASS' if ok_sep else 'FAIL'}")
    return 0 if ok_aa and ok10 and ok_sep else 1


if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--hog"]
    sys.exit(main(int(argv[0]) if argv else 5, int(argv[1]) if len(argv) > 1 else 6, "--hog" in sys.argv))
