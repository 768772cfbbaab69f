"""Work per forward pass, counted from an ONNX graph with static shapes, and the host's fp32 peak.

A FLOP here is one floating-point multiply or add, so one multiply-accumulate is 2 FLOPs (the
convention of papers and of vendors' peak figures). Counted: Conv, ConvTranspose, MatMul, Gemm
(the operators that hold nearly all the work of a vision CNN); bias additions, activations,
pooling and normalization are not counted, so `gflop` slightly understates the total.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _shapes(model: Any) -> dict[str, list[int | None]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
    for init in inferred.graph.initializer:
        out[init.name] = list(init.dims)
    return out


def _prod(dims: list[int | None]) -> int | None:
    if any(d is None for d in dims):
        return None
    return math.prod(dims)  # type: ignore[arg-type]


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def node_flops(node: Any, shapes: dict[str, list[int | None]]) -> int | None:
    """FLOPs of one node, or None when a shape it needs is unknown."""
    def shape(i: int) -> list[int | None] | None:
        return shapes.get(node.input[i]) if i < len(node.input) and node.input[i] else None

    out = shapes.get(node.output[0]) if node.output else None
    if node.op_type == "Conv":
        w = shape(1)
        if w is None or out is None:
            return None
        per_output = _prod(w[1:])  # (Cin / groups) x kernel
        n = _prod(out)
        return None if per_output is None or n is None else 2 * n * per_output
    if node.op_type == "ConvTranspose":
        x, w = shape(0), shape(1)
        if x is None or w is None:
            return None
        per_input = _prod(w[1:])  # (Cout / groups) x kernel, for every input element
        n = _prod(x)
        return None if per_input is None or n is None else 2 * n * per_input
    if node.op_type == "MatMul":
        a = shape(0)
        if a is None or out is None or not a:
            return None
        k, n = a[-1], _prod(out)
        return None if k is None or n is None else 2 * n * k
    if node.op_type == "Gemm":
        a = shape(0)
        if a is None or out is None or len(a) != 2:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        n = _prod(out)
        return None if k is None or n is None else 2 * n * k
    return 0


def count_flops(model: Any) -> dict[str, Any]:
    """{"flops": total, "by_op": {op: flops}, "uncounted": [node names whose shapes were unknown]}."""
    shapes = _shapes(model)
    by_op: Counter[str] = Counter()
    uncounted = []
    for node in model.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        f = node_flops(node, shapes)
        if f is None:
            uncounted.append(node.name or node.op_type)
        else:
            by_op[node.op_type] += f
    return {"flops": sum(by_op.values()), "by_op": dict(by_op), "uncounted": uncounted}


def file_gflop(path: Path) -> float | None:
    """GFLOP of one forward pass of a static-shape ONNX file; None when some counted node's shapes
    are unknown (a number that leaves work out would flatter the engine)."""
    import onnx

    counted = count_flops(onnx.load(str(path)))
    return None if counted["uncounted"] else counted["flops"] / 1e9


# --- the host's theoretical fp32 peak ----------------------------------------------------------------

# fp32 lanes of the widest vector unit a CPU flag announces.
_SIMD_LANES = (("avx512f", 16), ("avx2", 8), ("avx", 8), ("sse2", 4), ("asimd", 4), ("neon", 4))


def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}


def _max_clock_ghz(info: dict[str, str]) -> tuple[float | None, str]:
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        return khz / 1e6, "cpufreq max"
    except (OSError, ValueError):
        pass
    if "cpu MHz" in info:
        return float(info["cpu MHz"]) / 1e3, "/proc/cpuinfo cpu MHz"
    return None, "unknown"


def cpu_peak(cores: int | None = None) -> dict[str, Any]:
    """Theoretical fp32 peak: cores x clock x SIMD lanes x 2 (an FMA is two FLOPs) x FMA units.

    Two FMA units per core is assumed where the CPU has FMA (every x86 core since Haswell and Zen
    has two 256-bit FMA pipes; AVX-512 parts vary), one otherwise. The figure is an upper bound
    that nothing reaches; it exists to put achieved GFLOP/s in proportion."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    cores = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    lanes = next((n for flag, n in _SIMD_LANES if flag in flags), 1)
    has_fma = "fma" in flags or "asimd" in flags
    fma_flops = fma_units = 2 if has_fma else 1
    ghz, clock_source = _max_clock_ghz(info)
    per_core = None if ghz is None else ghz * lanes * fma_flops * fma_units
    return {"cores": cores, "fp32_peak_gflops": None if per_core is None else round(per_core * cores, 1),
            "fp32_peak_gflops_per_core": None if per_core is None else round(per_core, 2),
            "peak_basis": f"{cores} cores x {ghz} GHz ({clock_source}) x {lanes} fp32 lanes x {fma_flops} (FMA) x {fma_units} FMA units"}
