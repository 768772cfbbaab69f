"""Drift metrics and Polygraphy's verdict, on real RunResults built from known arrays."""

import numpy as np
import pytest

from bench.config import Tolerance
from bench.validate import compare, run_outputs


class ArrayVariant:
    """A compiled variant whose outputs are given: to build RunResults through Polygraphy's Comparator."""

    facts = {}
    clock = staticmethod(lambda: 0)

    def __init__(self, outputs):
        self.outputs = list(outputs)

    def run(self, feeds):
        return {"y": self.outputs.pop(0)}

    def prepare(self, feeds):
        return lambda: None

    def release(self):
        pass


FEEDS = [{"x": np.zeros((2, 3), np.float32)}, {"x": np.ones((2, 3), np.float32)}]
REF = [np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]], np.float32), np.array([[0.0, 1.0, 2.0], [5.0, 4.0, 1.0]], np.float32)]
TOL = Tolerance(atol=1e-3, rtol=1e-3, min_cosine=0.999)


def _drift(candidate, tol=TOL):
    ref = run_outputs(ArrayVariant([r.copy() for r in REF]), "ref", FEEDS)
    cand = run_outputs(ArrayVariant(candidate), "cand", FEEDS)
    return compare(ref, cand, tol)


def test_identical_outputs_pass():
    d = _drift([r.copy() for r in REF])
    assert d.accuracy_ok and d.reason == ""
    assert d.max_abs_err == 0 and d.cosine == pytest.approx(1.0) and d.top1_agreement == 1.0


def test_error_statistics_are_exact():
    cand = [REF[0] + np.float32(0.5) * (np.arange(6).reshape(2, 3) == 1), REF[1].copy()]
    d = _drift(cand, Tolerance(atol=1.0, rtol=1.0, min_cosine=0.0))
    assert d.max_abs_err == pytest.approx(0.5)
    assert d.mean_abs_err == pytest.approx(0.5 / 12)
    assert d.max_rel_err == pytest.approx(0.25)  # 0.5 on a reference of 2.0
    assert d.accuracy_ok


def test_drift_beyond_tolerance_fails_and_top1_counts_flips():
    cand = [REF[0].copy(), REF[1].copy()]
    cand[1][0] = [3.0, 1.0, 2.0]  # row 0's argmax moves from class 2 to class 0
    d = _drift(cand)
    assert not d.accuracy_ok
    assert "beyond atol=0.001" in d.reason
    assert d.top1_agreement == pytest.approx(3 / 4)


def test_tight_tolerance_fails_what_a_loose_one_passes():
    cand = [r + np.float32(1e-4) for r in REF]
    assert _drift(cand, Tolerance(atol=1e-3, rtol=0, min_cosine=0)).accuracy_ok
    assert not _drift(cand, Tolerance(atol=1e-6, rtol=1e-6, min_cosine=0)).accuracy_ok


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_fails_validation(bad):
    cand = [REF[0].copy(), REF[1].copy()]
    cand[0][1, 1] = bad
    d = _drift(cand, Tolerance(atol=1e9, rtol=1e9, min_cosine=-1))
    assert not d.accuracy_ok
    assert "NaN or Inf" in d.reason


def test_shape_mismatch_fails():
    d = _drift([REF[0][:1], REF[1][:1]])
    assert not d.accuracy_ok and "shape" in d.reason


def test_an_all_zero_reference_is_judged_elementwise_alone():
    zeros = [np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)]

    def drift(candidate):
        ref = run_outputs(ArrayVariant([z.copy() for z in zeros]), "ref", FEEDS)
        return compare(ref, run_outputs(ArrayVariant(candidate), "cand", FEEDS), Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999))

    tiny = drift([z + np.float32(1e-7) for z in zeros])
    assert tiny.accuracy_ok and np.isnan(tiny.cosine) and tiny.reason == ""  # cosine is undefined, not failed
    far = drift([z + np.float32(0.5) for z in zeros])
    assert not far.accuracy_ok and "beyond atol=0.0001" in far.reason and "cosine" not in far.reason
    exact = drift([z.copy() for z in zeros])
    assert exact.accuracy_ok


class MultiVariant(ArrayVariant):
    """Outputs given per call as a dict of named arrays (several outputs)."""

    def run(self, feeds):
        return self.outputs.pop(0)


def _cases():
    rng = np.random.default_rng(5)
    ref = [{"a": rng.standard_normal((2, 8)).astype(np.float32), "b": rng.standard_normal((2, 3)).astype(np.float32) * 100}
           for _ in range(2)]
    same = [{k: v.copy() for k, v in r.items()} for r in ref]
    # relative error is Polygraphy's, against the candidate's value: 1e-3 -> 2e-3 is 0.5 of the
    # candidate (passes rtol 0.6) but 1.0 of the reference (would fail it)
    edge = [{k: v.copy() for k, v in r.items()} for r in ref]
    edge[0]["a"][0, 0], ref_edge0 = 2.0e-3, 1.0e-3
    # one small output's cosine fails alone while the pooled cosine (dominated by the large output) passes
    small = [{"a": r["a"] * 1e-3, "b": r["b"]} for r in ref]
    pooled = [{"a": rng.standard_normal(r["a"].shape).astype(np.float32) * 1e-3, "b": r["b"].copy()} for r in ref]
    zeros_ref = [{"a": np.zeros_like(r["a"]), "b": r["b"].copy()} for r in ref]
    nan = [{k: v.copy() for k, v in r.items()} for r in ref]
    nan[1]["b"][0, 0] = np.nan
    return ref, {"same": (ref, same), "edge": ([{"a": r["a"].copy(), "b": r["b"].copy()} for r in ref], edge),
                 "pooled cosine": (small, pooled), "an all-zero reference output": (zeros_ref, same), "nan": (ref, nan)}, ref_edge0


@pytest.mark.parametrize("tol", [Tolerance(atol=1e-5, rtol=1e-3, min_cosine=0.999), Tolerance(atol=1e-2, rtol=0.5, min_cosine=0.9),
                                 Tolerance(atol=1e-5, rtol=0.6, min_cosine=0.99)])
def test_the_bundle_judges_as_the_suite_does(tol):
    """bench/bundle_runner.py repeats the suite's accuracy rule (it runs where bench is not installed):
    the same verdict, cosine and max error on the same outputs, including where a relative error's
    denominator, a per-output against a pooled cosine, or a NaN would tell them apart."""
    from bench.bundle_runner import judge

    _, cases, ref_edge0 = _cases()
    feeds = [{"x": np.zeros((1,), np.float32)}] * 2
    for name, (ref, cand) in cases.items():
        if name == "edge":
            ref[0]["a"][0, 0] = ref_edge0
        suite = compare(run_outputs(MultiVariant(ref), "ref", feeds), run_outputs(MultiVariant(cand), "cand", feeds), tol)
        bundle = judge([(r[k], c[k]) for r, c in zip(ref, cand) for k in r], {"atol": tol.atol, "rtol": tol.rtol,
                                                                                 "min_cosine": tol.min_cosine})
        assert bundle["ok"] == suite.accuracy_ok, (name, bundle, suite)
        assert bundle["cosine"] == pytest.approx(suite.cosine, nan_ok=True), name
        assert bundle["max_abs_err"] == pytest.approx(suite.max_abs_err, nan_ok=True), name


def _fresh_python(code: str):
    """`code` run by a fresh interpreter from the project's root (nothing imported yet)."""
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)


def test_validation_does_not_import_torch():
    """Polygraphy's is_torch probe imported PyTorch in every validating worker (1.1 s of a cell's
    fixed cost); a worker that never touched torch must validate without importing it."""
    code = ("import sys; import numpy as np\n"
            "from tests.test_validate import ArrayVariant, FEEDS, REF, TOL\n"
            "from bench.validate import compare, run_outputs\n"
            "ref = run_outputs(ArrayVariant([r.copy() for r in REF]), 'ref', FEEDS)\n"
            "cand = run_outputs(ArrayVariant([r + 0.5 for r in REF]), 'cand', FEEDS)\n"
            "d = compare(ref, cand, TOL)\n"
            "assert not d.accuracy_ok and abs(d.max_abs_err - 0.5) < 1e-6, d\n"
            "print('torch' in sys.modules)\n")
    out = _fresh_python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_the_torch_probe_hands_off_to_polygraphy_once_torch_is_loaded():
    code = ("import sys\n"
            "from bench.validate import _no_torch_probe\n"
            "from polygraphy.util import array\n"
            "_no_torch_probe(); _no_torch_probe()\n"
            "assert not array.is_torch([1.0]) and 'torch' not in sys.modules\n"
            "import torch\n"
            "assert array.is_torch(torch.zeros(2)) and not array.is_torch(__import__('numpy').zeros(2))\n")
    out = _fresh_python(code)
    if "No module named 'torch'" in out.stderr:
        pytest.skip("torch is not installed here")
    assert out.returncode == 0, out.stderr[-2000:]


class DetectorVariant(ArrayVariant):
    def run(self, feeds):
        return self.outputs.pop(0)


def _detector(score_shift):
    """A detector's two outputs in their own units: boxes in pixels (0..640), scores in [0, 1]."""
    rng = np.random.default_rng(0)
    ref = [{"boxes": rng.uniform(0, 640, (2, 50, 4)).astype(np.float32), "scores": rng.uniform(0, 1, (2, 50)).astype(np.float32)}
           for _ in FEEDS]
    cand = [{"boxes": r["boxes"] + rng.choice([-1.5, 1.5], r["boxes"].shape).astype(np.float32),  # 1.5 px off
             "scores": r["scores"] + np.float32(score_shift)} for r in ref]
    return (run_outputs(DetectorVariant([dict(r) for r in ref]), "ref", FEEDS), run_outputs(DetectorVariant(cand), "cand", FEEDS),
            float(max(r["boxes"].max() for r in ref) - min(r["boxes"].min() for r in ref)))


def test_per_output_tolerances_relative_to_each_outputs_range():
    ref, cand, box_range = _detector(0.004)
    absolute = Tolerance(atol=0.02, rtol=0.0, min_cosine=0.99)
    # one absolute atol cannot fit both: 1.5 px fails it, though the boxes are 0.2% of their span off
    assert not compare(ref, cand, absolute).accuracy_ok
    by_range = Tolerance(atol=0.005, rtol=0.0, min_cosine=0.99, scale="range")
    drift = compare(ref, cand, absolute, per_output={"boxes": by_range, "scores": by_range})
    assert drift.accuracy_ok, drift.reason
    # the scores are judged in their own units: 0.02 off is 2% of their range, beyond 0.5%
    ref, cand, _ = _detector(0.02)
    drift = compare(ref, cand, absolute, per_output={"boxes": by_range, "scores": by_range})
    assert not drift.accuracy_ok
    assert f"boxes: {0.005 * box_range:.4g}" in drift.reason and "scores: 0.00" in drift.reason
