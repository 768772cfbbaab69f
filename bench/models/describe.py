"""`bench inspect`: what an ONNX file takes and returns, what it is made of, and how much work one
forward pass is at given shapes; ends with the `input_shapes:` block to paste into a config."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import AS_GIVEN, BATCH, ModelSpec
from bench.errors import BenchError


def _io(value_infos: Any) -> list[dict[str, Any]]:
    from onnx import helper

    from bench.models.prepare import model_dims

    out = []
    for vi in value_infos:
        elem = vi.type.tensor_type.elem_type
        dims = model_dims(vi)
        out.append({"name": vi.name, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name if elem else "?",
                    "dims": dims, "dynamic": [i for i, d in enumerate(dims) if isinstance(d, str)]})
    return out


def describe(path: Path, input_shapes: dict[str, list[Any]] | None = None, dims: dict[str, int] | None = None,
             batch: int = 1) -> dict[str, Any]:
    import onnx

    from bench.models.flops import count_flops
    from bench.models.freeze import freeze, model_sha256
    from bench.models.graph import quantized_ops
    from bench.models.prepare import _onnx_info, suggest

    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise BenchError(f"{path}: not a readable ONNX model: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = _io([i for i in model.graph.input if i.name not in initializers])
    desc: dict[str, Any] = {
        "path": str(path), "sha256": model_sha256(path),
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": inputs, "outputs": _io(model.graph.output),
        "ops": dict(Counter(n.op_type for n in model.graph.node).most_common()),
        "quantized": quantized_ops(model),
        "parameters": int(sum(int(np.prod(t.dims)) for t in model.graph.initializer)),
        "suggested_input_shapes": {i["name"]: suggest(i["dims"]) for i in inputs},
        "batch": batch, "shapes": None, "gflop": None, "flops_note": None,
    }
    spec = ModelSpec(name="inspect", source=str(path), input_shapes=input_shapes or {}, dims=dims or {})
    try:
        info = _onnx_info(spec, "inspect", None, [batch])
    except BenchError as e:
        desc["flops_note"] = f"FLOPs need every dimension fixed: {e}"
        return desc
    desc["shapes"] = {k: list(v) for k, v in info.shapes(batch).items()}
    desc["suggested_input_shapes"] = {i.name: list(i.dims) for i in info.inputs}
    frozen, facts = freeze(model, info.shapes(batch))
    counted = count_flops(frozen)
    desc["gflop"] = counted["flops"] / 1e9
    desc["gflop_by_op"] = {k: v / 1e9 for k, v in counted["by_op"].items()}
    desc["nodes_after_folding"] = facts["nodes_after"]
    if counted["uncounted"]:
        desc["flops_note"] = f"shapes unknown after folding for {len(counted['uncounted'])} nodes (e.g. {counted['uncounted'][0]}): not counted"
    return desc


def _dims(d: list[Any]) -> str:
    return "[" + ", ".join(str(x) for x in d) + "]"


def render(desc: dict[str, Any]) -> str:
    lines = [f"{desc['path']}", f"  sha256 {desc['sha256'][:16]}  opset {desc['opset']}  producer {desc['producer'] or '?'}",
             f"  parameters {desc['parameters']:,}  nodes {sum(desc['ops'].values())}", "", "inputs:"]
    for i in desc["inputs"]:
        dyn = "  dynamic: " + ", ".join(f"{k} ({i['dims'][k]})" for k in i["dynamic"]) if i["dynamic"] else ""
        lines.append(f"  {i['name']}: {i['dtype']} {_dims(i['dims'])}{dyn}")
    lines.append("outputs:")
    for o in desc["outputs"]:
        lines.append(f"  {o['name']}: {o['dtype']} {_dims(o['dims'])}")
    lines += ["", "operators: " + ", ".join(f"{k} x{v}" for k, v in desc["ops"].items()), ""]
    if desc["quantized"]:
        lines += [f"arrives quantized ({desc['quantized']}): a sweep runs it as given, under precision {AS_GIVEN!r}, "
                  "and skips fp16 and int8 conversions of it", ""]
    if desc["gflop"] is not None:
        shapes = ", ".join(f"{k} {_dims(v)}" for k, v in desc["shapes"].items())
        lines.append(f"work at {shapes}: {desc['gflop']:.4g} GFLOP per forward pass "
                     f"({', '.join(f'{k} {v:.3g}' for k, v in desc['gflop_by_op'].items()) or 'no counted ops'}; "
                     f"{desc['nodes_after_folding']} nodes after freezing and folding)")
    if desc["flops_note"]:
        lines.append(desc["flops_note"])
    lines += ["", "# paste into the model's entry of a config; replace any <placeholder> with a size:", "input_shapes:"]
    for name, dims in desc["suggested_input_shapes"].items():
        lines.append(f"  {name}: {_dims(dims)}")
    return "\n".join(lines)


def parse_dims(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise BenchError(f"--dim {item!r}: expected NAME=SIZE, e.g. --dim height=224")
        out[name.strip()] = int(value)
    return out


def parse_shapes(items: list[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        parts = [p.strip() for p in value.split(",")]
        if not sep or not parts or not all(p == BATCH or p.isdigit() for p in parts):
            raise BenchError(f"--shape {item!r}: expected INPUT=d0,d1,... with sizes or 'batch', e.g. --shape x=batch,3,224,224")
        out[name.strip()] = [p if p == BATCH else int(p) for p in parts]
    return out
