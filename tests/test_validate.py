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
