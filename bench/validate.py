"""Output validation with Polygraphy: any compiled variant runs as a Polygraphy runner on the same
seeded inputs as the reference; Polygraphy's Comparator judges the tolerances, and the error
statistics published in each row are computed here from the same outputs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from bench.backends.base import Compiled, Feeds
from bench.config import Tolerance


def _quiet_polygraphy() -> None:
    """bench reports drift itself; Polygraphy's per-iteration log lines would only be noise."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.colors = False
    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    _no_torch_probe()


class _TorchIfLoaded:
    """What polygraphy.util.array sees as `torch`: Polygraphy's own lazy module once PyTorch has been
    imported by anyone, and until then a module that is not installed (so nothing imports it)."""

    def __init__(self, lazy: Any):
        self._lazy = lazy

    def is_installed(self) -> bool:
        import sys

        return "torch" in sys.modules and self._lazy.is_installed()

    def is_importable(self) -> bool:
        return self.is_installed() and self._lazy.is_importable()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lazy, name)


def _no_torch_probe() -> None:
    """Polygraphy asks `is_torch(array)` of every output it stores (polygraphy.util.array), and that
    imports PyTorch whenever it is installed: about 1.1 s in each validating worker, most of a cell's
    fixed cost on a small model. A process that has not imported torch holds no torch tensor, so
    until it has, the question is answered without the import (_TorchIfLoaded)."""
    from polygraphy.util import array

    if not isinstance(array.torch, _TorchIfLoaded):
        array.torch = _TorchIfLoaded(array.torch)


def make_runner(compiled: Compiled, name: str, feeds: Feeds) -> Any:
    """A Polygraphy runner around any compiled variant (the class is built here so that importing
    this module does not import Polygraphy)."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class _Runner(BaseRunner):
        def activate_impl(self):
            pass

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for k, v in feeds.items():
                meta.add(k, v.dtype, v.shape)
            return meta

        def infer_impl(self, feed_dict):
            # Polygraphy's own timing (logs only; bench.timing publishes the real figures).
            t0 = time.perf_counter()
            out = OrderedDict(compiled.run(feed_dict))
            self.inference_time = time.perf_counter() - t0
            return out

        def deactivate_impl(self):
            pass

    return _Runner(name=name)


def run_outputs(compiled: Compiled, name: str, feeds: Sequence[Feeds]) -> Any:
    """Polygraphy RunResults of one runner over the feeds."""
    from polygraphy.comparator import Comparator

    _quiet_polygraphy()
    return Comparator.run([make_runner(compiled, name, feeds[0])], data_loader=list(feeds))


@dataclass(frozen=True)
class Drift:
    max_abs_err: float
    max_rel_err: float
    mean_abs_err: float
    p99_abs_err: float
    cosine: float
    top1_agreement: float | None
    accuracy_ok: bool
    reason: str  # why accuracy_ok is false; empty otherwise

    def as_row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "reason"}


def _class_axis(ref: np.ndarray, task: str) -> int | None:
    """The axis holding class scores, where the output is class scores."""
    if ref.ndim == 2 and ref.shape[1] > 1:
        return 1
    if ref.ndim == 4 and ref.shape[1] > 1 and task == "segmentation":
        return 1
    return None


def compare(reference: Any, candidate: Any, tolerance: Tolerance, task: str = "unknown",
            per_output: Mapping[str, Tolerance] | None = None) -> Drift:
    """Drift of `candidate` against `reference` (Polygraphy RunResults, one runner each).

    `per_output` overrides atol and rtol for named outputs (Polygraphy takes them per output);
    cosine is judged on all outputs together, against the strictest min_cosine given. A tolerance
    with `scale: range` has its atol turned into output units here (`absolute_atols`)."""
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.comparator.compare import SimpleCompareFunc

    _quiet_polygraphy()
    (ref_name, ref_iters), = reference.items()
    (cand_name, cand_iters), = candidate.items()
    combined = RunResults([(ref_name, ref_iters), (cand_name, cand_iters)])
    atols = absolute_atols(tolerance, per_output, ref_iters)
    with np.errstate(all="ignore"):  # NaN and Inf outputs fail validation; they need no warning
        verdict = Comparator.compare_accuracy(
            combined,
            compare_func=SimpleCompareFunc(atol=atols,
                                           rtol=_per_output(tolerance.rtol, per_output, "rtol"), check_error_stat="elemwise"),
        )
        if per_output:
            tolerance = tolerance.model_copy(update={"min_cosine": max([tolerance.min_cosine, *(t.min_cosine for t in per_output.values())])})
        return _drift(ref_iters, cand_iters, tolerance, task, bool(verdict), atols)


def absolute_atols(tolerance: Tolerance, per_output: Mapping[str, Tolerance] | None, ref_iters: Any) -> float | dict[str, float]:
    """atol per output in the output's units: as given, or (scale: range) times the reference
    output's range over every validation iteration."""
    per_output = per_output or {}
    names = list(ref_iters[0].keys()) if len(ref_iters) else []
    if tolerance.scale == "absolute" and all(t.scale == "absolute" for t in per_output.values()):
        return _per_output(tolerance.atol, per_output, "atol")
    out: dict[str, float] = {}
    for name in names:
        tol = per_output.get(name, tolerance)
        if tol.scale == "range":
            values = [np.asarray(it[name], dtype=np.float64) for it in ref_iters]
            finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
            span = float(finite.max() - finite.min()) if finite.size else 0.0
            # an output that does not vary (a fixed mask, an anchor grid) has no range: atol as given
            out[name] = tol.atol * span if span > 0 else tol.atol
        else:
            out[name] = tol.atol
    return out


def _per_output(default: float, per_output: Mapping[str, Tolerance] | None, field: str) -> float | dict[str, float]:
    if not per_output:
        return default
    return {"": default, **{name: getattr(t, field) for name, t in per_output.items()}}


def _drift(ref_iters: Any, cand_iters: Any, tolerance: Tolerance, task: str, within_tolerance: bool,
           atols: float | Mapping[str, float] | None = None) -> Drift:
    abs_errs, rel_errs, ref_flat, cand_flat, top1 = [], [], [], [], []
    reasons = []
    for it, (r_it, c_it) in enumerate(zip(ref_iters, cand_iters)):
        for name, ref in r_it.items():
            if name not in c_it:
                reasons.append(f"output {name!r} missing")
                continue
            cand = np.asarray(c_it[name])
            ref = np.asarray(ref)
            if cand.shape != ref.shape:
                reasons.append(f"output {name!r} has shape {cand.shape}, reference {ref.shape}")
                continue
            if not np.all(np.isfinite(cand)):
                reasons.append(f"output {name!r} holds NaN or Inf")
            r64, c64 = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
            diff = np.abs(c64 - r64)
            abs_errs.append(diff)
            # Relative to the reference's magnitude, floored at fp32 epsilon so exact zeros don't divide.
            rel_errs.append(diff / np.maximum(np.abs(r64), np.finfo(np.float32).eps))
            ref_flat.append(r64)
            cand_flat.append(c64)
            axis = _class_axis(ref, task)
            if axis is not None:
                top1.append(np.argmax(ref, axis=axis).ravel() == np.argmax(cand, axis=axis).ravel())
    if not abs_errs:
        return Drift(*(float("nan"),) * 5, None, False, "; ".join(reasons) or "no outputs to compare")

    d, rel = np.concatenate(abs_errs), np.concatenate(rel_errs)
    known = ~np.isnan(d)  # NaN outputs already failed above; the statistics describe the rest
    d, rel = d[known], rel[known]
    nan = float("nan")
    r, c = np.concatenate(ref_flat), np.concatenate(cand_flat)
    # Cosine similarity is undefined when either side has norm zero (an all-zero reference, a
    # mask that is all off). The rule then: cosine is not judged (NaN in the row) and the
    # elementwise atol/rtol test alone decides, so 1e-7 against an all-zero reference passes at
    # atol 1e-4 and 0.5 against it fails.
    denom = np.linalg.norm(r) * np.linalg.norm(c)
    cosine = float(np.dot(r, c) / denom) if denom > 0 else nan
    if not within_tolerance:
        if isinstance(atols, Mapping):
            each = ", ".join(f"{k or 'others'}: {v:.4g}" for k, v in atols.items())
            reasons.append(f"elements beyond atol (per output: {each}) and rtol={tolerance.rtol:g}")
        else:
            reasons.append(f"elements beyond atol={tolerance.atol:g} and rtol={tolerance.rtol:g}")
    if denom > 0 and not cosine >= tolerance.min_cosine:
        reasons.append(f"cosine {cosine:.6f} below {tolerance.min_cosine:g}")
    return Drift(
        max_abs_err=float(d.max()) if d.size else nan,
        max_rel_err=float(rel.max()) if d.size else nan,
        mean_abs_err=float(d.mean()) if d.size else nan,
        p99_abs_err=float(np.percentile(d, 99)) if d.size else nan,
        cosine=cosine,
        top1_agreement=float(np.concatenate(top1).mean()) if top1 else None,
        accuracy_ok=not reasons,
        reason="; ".join(reasons),
    )
