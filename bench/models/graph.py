"""Facts and checks about an ONNX graph that every rewrite leans on: its opset, whether an operator's
input is optional at that opset, whether it arrives quantized, and whether a rewritten graph is one
that ONNX and ONNX Runtime accept with consistent types (`graph_problem`).

Every graph the suite writes (a prepared model, an fp16 or int8 conversion) is checked here before
any backend sees it: an engine that accepts an invalid graph silently computes something else.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# Operators that only appear in a model that is already quantized: integer kernels, Q/DQ pairs and
# ONNX Runtime's contrib quantized ops (onnxruntime.quantization writes these).
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv",
    "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax", "QAttention", "QGemm", "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QOrderedMatMul", "QuantizeBFP", "DequantizeBFP",
})
ONNX_DOMAINS = ("", "ai.onnx")


def opset_of(model: Any) -> int:
    """The default-domain opset the model imports (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)


def all_nodes(graph: Any) -> list[Any]:
    """Every node of the graph and of its subgraphs (If branches, Loop and Scan bodies)."""
    from onnx import AttributeProto

    out = []
    for node in graph.node:
        out.append(node)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                out.extend(all_nodes(attr.g))
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    out.extend(all_nodes(g))
    return out


def input_is_optional(op_type: str, index: int, opset: int, domain: str = "") -> bool:
    """Whether input `index` of `op_type` may be left out (an empty name) at this opset, by the
    operator's own schema. False where the schema is unknown: nothing is dropped on a guess."""
    import onnx.defs

    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except Exception:  # SchemaError: no such operator at that opset
        return False
    if index >= len(schema.inputs):
        return False
    return schema.inputs[index].option == onnx.defs.OpSchema.FormalParameterOption.Optional


def quantized_ops(model: Any) -> str:
    """'ConvInteger x2, DynamicQuantizeLinear x2' for a model that arrives quantized; '' otherwise."""
    counts = Counter(n.op_type for n in all_nodes(model.graph) if n.op_type in QUANTIZED_OPS)
    return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def nodes_of(model: Any, op_types: set[str]) -> dict[str, list[str]]:
    """Names of the nodes of each op type (in graph order; '<unnamed>' for an unnamed node)."""
    out: dict[str, list[str]] = {}
    for node in all_nodes(model.graph):
        if node.op_type in op_types:
            out.setdefault(node.op_type, []).append(node.name or "<unnamed>")
    return out


def name_nodes(found: dict[str, list[str]], most: int = 3) -> str:
    """"LSTM (node 'lstm_1'), ConvInteger (3 nodes: 'a', 'b', 'c')"."""
    parts = []
    for op, names in found.items():
        shown = ", ".join(repr(n) for n in names[:most]) + (f", +{len(names) - most} more" if len(names) > most else "")
        parts.append(f"{op} (node {shown})" if len(names) == 1 else f"{op} ({len(names)} nodes: {shown})")
    return ", ".join(parts)


def _type_mix(model: Any) -> str:
    """A node whose inputs that its schema binds to one type variable disagree in element type
    (float32 beside float16 in an Add, say), judged on the types ONNX's shape inference gives every
    tensor. Inputs the schema types apart (Resize's `scales`, BatchNormalization-15's statistics)
    may differ. '' when none disagree."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    opsets = {("" if o.domain in ONNX_DOMAINS else o.domain): o.version for o in model.opset_import}
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        domain = "" if node.domain in ONNX_DOMAINS else node.domain
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
        except Exception:  # an op ONNX does not know (a contrib op): its schema cannot say
            continue
        formal = list(schema.inputs)
        by_var: dict[str, set[int]] = {}
        for i, name in enumerate(node.input):
            if not name or name not in types or not formal:
                continue
            param = formal[min(i, len(formal) - 1)]
            if i >= len(formal) and param.option != param.option.Variadic:
                continue  # more inputs than the schema has: the checker's to judge
            if param.option == param.option.Variadic and not param.is_homogeneous:
                continue  # Loop's carried values, say: each of its own type
            by_var.setdefault(param.type_str, set()).add(types[name])
        for var, seen in by_var.items():
            if len(seen) > 1 and not var.startswith("tensor("):  # a type variable, not a fixed type
                names = ", ".join(TensorProto.DataType.Name(t).lower() for t in sorted(seen))
                return f"node {node.name or '<unnamed>'!r} ({node.op_type}) mixes {names} inputs"
    return ""


def graph_problem(path: Path) -> str:
    """Why ONNX or ONNX Runtime refuses the model at `path`, or why its types are inconsistent; ''
    when ONNX's full check (types and shapes, strictly), a float-type consistency check and an ONNX
    Runtime CPU session all accept it."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        mix = _type_mix(onnx.load(str(path), load_external_data=False))  # types only: no weights needed
        if mix:
            return f"inconsistent types: {mix}"
    except Exception as e:  # ValidationError, InferenceError and friends
        return f"onnx.checker: {one_line(e)}"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return ""  # ONNX's own check stood; nothing else to ask
    try:
        cpu_session(path, optimize=False)
    except Exception as e:
        return f"ONNX Runtime refuses it: {one_line(e)}"
    return ""


def one_line(e: BaseException, most: int | None = None) -> str:
    """'TypeName: message' on one line (the message cut at `most` characters when given)."""
    text = " ".join(str(e).split())[:most]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def upgrade_opset(model: Any, opset: int) -> Any:
    """The model at `opset` by ONNX's version converter (which raises where it cannot). An IR-3 model
    is read as IR 4 first: IR 3 lists every initializer as a graph input too, and the converter
    needs IR 4's rule ("Input w is undefined" otherwise)."""
    import onnx

    if model.ir_version < 4:
        model.ir_version = 4
    return onnx.version_converter.convert_version(model, opset)


def cpu_session(model: Any, optimize: bool = True) -> Any:
    """A quiet ONNX Runtime CPU session on a model path or serialized bytes (optimize=False: loading
    is the question, not speed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


def session_feeds(session: Any, seed: int = 0) -> dict[str, Any]:
    """Seeded inputs for every input of an ONNX Runtime session: floats in [0, 1), integers 0,
    booleans False; a symbolic dimension is 1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    types = {"float": "float32", "double": "float64"}
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        dtype = np.dtype(types.get(i.type[7:-1], i.type[7:-1]))  # 'tensor(float)' -> float32
        feeds[i.name] = rng.random(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return feeds


def outputs_differ(original: Path, prepared: Path) -> str:
    """Why the prepared model does not compute what the original does on the same seeded inputs
    (an output of another shape than it declares, or values apart), or '' when it does. When the
    original itself does not run on such inputs (values it refuses), nothing can be said: ''."""
    import numpy as np

    prep = cpu_session(prepared)
    feeds = session_feeds(prep)
    try:
        want = cpu_session(original).run(None, feeds)
    except Exception:
        return ""
    try:
        got = prep.run(None, feeds)
    except Exception as e:
        return f"it does not run where the original does: {one_line(e)}"
    for meta, g, w in zip(prep.get_outputs(), got, want):
        g, w = np.asarray(g), np.asarray(w)
        declared = [d if isinstance(d, int) else None for d in meta.shape]
        if len(declared) != g.ndim or any(d is not None and d != n for d, n in zip(declared, g.shape)):
            return f"output {meta.name!r} is declared {meta.shape} but has shape {list(g.shape)}"
        if g.shape != w.shape:
            return f"output {meta.name!r} has shape {list(g.shape)}, the original's {list(w.shape)}"
        if g.dtype.kind == "f" and not np.allclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"output {meta.name!r} differs from the original's by up to {float(np.nanmax(np.abs(g - w))):.3g}"
        if g.dtype.kind != "f" and not np.array_equal(g, w):
            return f"output {meta.name!r} differs from the original's"
    return ""


_STRAY = re.compile(r"^(sym_shape_infer_temp\.onnx|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.data)$")


@contextmanager
def no_strays() -> Iterator[None]:
    """ONNX Runtime's symbolic shape inference (under Polygraphy's shape inference and the
    quantizer's pre-processing) saves `sym_shape_infer_temp.onnx` and a uuid-named `.data` file into
    the current directory whenever it cannot infer every shape, and nothing reads them. Remove
    those it left behind during the block (the name is fixed, so the directory cannot be chosen)."""
    cwd = Path.cwd()
    before = {p.name for p in cwd.iterdir() if _STRAY.match(p.name)}
    try:
        yield
    finally:
        for p in cwd.iterdir():
            if _STRAY.match(p.name) and p.name not in before:
                p.unlink(missing_ok=True)
