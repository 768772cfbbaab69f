"""The model-preparation stage: a user's ONNX file frozen to one cell's concrete input shapes.

Other exporters leave shape-computing subgraphs (`Shape -> Gather -> Concat -> Reshape`, `Shape ->
Slice -> Sub`, `Range`, `Expand`, `Resize` with computed sizes), dynamic spatial dimensions and
`dim_value: -1` in their files. ONNX Runtime copes; TVM's importer and ONNX Runtime's own
quantization pre-processing (symbolic shape inference) do not. So before any backend sees a
model, it is frozen here with Polygraphy, the same steps as `polygraphy surgeon sanitize
--override-input-shapes ... --fold-constants`: input shapes overridden, shapes inferred, constants
folded until nothing changes. Shape subgraphs become constants and every tensor gets a static shape.

One normalization is added: an optional input given as an empty constant tensor (`Resize`'s `roi`
and `scales`, as older exporters write them) is dropped to the empty name the ONNX spec uses for
"absent"; TVM's importer reads an empty `scales` as given and refuses `sizes` beside it. Only where
the operator's schema at the model's opset makes that input optional (Resize-11's `roi` is not).
A model below opset 13 that passes such empty inputs where they are required (PyTorch's opset-11
interpolate(size=...)) is first upgraded to opset 13 with ONNX's version converter.

Preparation is proven safe, not assumed: the prepared model must pass ONNX's full check and load in
ONNX Runtime (bench.models.graph.graph_problem), and compute what the original does on seeded
inputs, every output of the shape it declares (`outputs_differ`: ONNX Runtime's symbolic shape
inference once declared [3, 4] for a Squeeze whose axes are an input, output [1, 3, 4]). When it
does not, the cell gets the original file (its shapes still given to the backend) and the row says
why (`preparation`).

A backend that builds one engine for every batch size (TensorRT's optimization profiles) keeps
the batch axis dynamic (`keeps_dynamic_batch`); every other dimension is still frozen.

Prepared models are cached by (source hash, shapes, preparation version, library versions).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.cache import ArtifactCache, file_sha256

# Bump when the preparation steps change: it is part of every prepared model's cache key.
PREPARE_VERSION = 4
# Above this serialized size a prepared model is written with external data (protobuf's 2 GB limit).
EXTERNAL_DATA_THRESHOLD = 1 << 30

# Optional inputs that mean "absent" when given as an empty tensor, by op type and input index.
_EMPTY_MEANS_ABSENT = {"Resize": (1, 2), "Upsample": ()}


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "none"


def external_files(path: Path) -> list[Path]:
    """The external-data files an ONNX model refers to (weights stored beside the .onnx file)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations = sorted({ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)})
    return [path.parent / loc for loc in locations]


def model_sha256(path: Path) -> str:
    """sha256 of the .onnx file, and of every external-data file it refers to (so a change to the
    weights beside the graph changes the hash)."""
    extra = external_files(path)
    if not extra:
        return file_sha256(path)
    h = hashlib.sha256(file_sha256(path).encode())
    for f in extra:
        if not f.is_file():
            raise FileNotFoundError(f"{path.name} refers to external data {f.name}, which is missing beside it")
        h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def _drop_empty_optional_inputs(graph: Any, opset: int) -> int:
    """Replace empty constant tensors in optional input slots by the absent input, where the op's
    schema at this opset lets that input be absent. Returns how many."""
    import onnx_graphsurgeon as gs

    from bench.models.graph import input_is_optional

    dropped = 0
    for node in graph.nodes:
        for idx in _EMPTY_MEANS_ABSENT.get(node.op, ()):
            if idx < len(node.inputs) and input_is_optional(node.op, idx, opset, node.domain or ""):
                t = node.inputs[idx]
                if isinstance(t, gs.Constant) and t.values.size == 0:
                    node.inputs[idx] = gs.Variable.empty()
                    dropped += 1
    return dropped


def _upgrade_for_absent_inputs(model: Any) -> tuple[Any, str | None]:
    """A model below opset 13 whose Resize passes empty constants for `roi`/`scales` (PyTorch's
    opset-11 export of interpolate(size=...)): those inputs are required there, and TVM's importer
    refuses `scales` beside `sizes`. Upgraded to opset 13 with ONNX's version converter, where they
    may be absent; ('11 -> 13') then, else the model as it was and None."""
    from onnx import numpy_helper

    from bench.models.graph import opset_of, upgrade_opset

    opset = opset_of(model)
    if opset >= 13:
        return model, None
    empty = {t.name for t in model.graph.initializer if 0 in t.dims}
    empty |= {n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.attribute
              and n.attribute[0].name == "value" and numpy_helper.to_array(n.attribute[0].t).size == 0}

    def refused(n: Any) -> bool:  # empty scales beside real sizes: what TVM refuses and opset 11 requires
        return (n.op_type == "Resize" and len(n.input) > 3 and n.input[2] in empty and bool(n.input[3])
                and n.input[3] not in empty)

    if not any(refused(n) for n in model.graph.node):
        return model, None
    try:
        return upgrade_opset(model, 13), f"{opset} -> 13"
    except Exception:  # the converter's limits: the model stays as it is (and its checks decide)
        return model, None


def freeze(model: Any, shapes: Mapping[str, Sequence[int | str]]) -> tuple[Any, dict[str, Any]]:
    """The ONNX model with its inputs fixed to `shapes` (a str dim stays dynamic, under that name),
    shapes inferred and constants folded. Returns (model, facts about what changed)."""
    import onnx_graphsurgeon as gs
    from polygraphy.backend.onnx import extract_subgraph, fold_constants, gs_from_onnx, infer_shapes
    from polygraphy.common import TensorMetadata
    from polygraphy.logger import G_LOGGER

    from bench.models.graph import opset_of

    G_LOGGER.module_severity = G_LOGGER.ERROR
    nodes_before = len(model.graph.node)
    model, upgraded = _upgrade_for_absent_inputs(model)
    declared = {o.name: len(o.type.tensor_type.shape.dim) for o in model.graph.output if o.type.tensor_type.HasField("shape")}
    graph = gs_from_onnx(model)
    meta = TensorMetadata()
    for t in graph.inputs:
        meta.add(t.name, t.dtype, list(shapes.get(t.name, t.shape)))
    # Polygraphy's --override-input-shapes: keep every input, in order, with the new shapes, and
    # forget intermediate shapes inferred for the old ones.
    graph = extract_subgraph(graph, meta)
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t not in graph.inputs:
            t.shape = None
    dropped = _drop_empty_optional_inputs(graph, opset_of(model))
    model = infer_shapes(gs.export_onnx(graph.cleanup()), allow_onnxruntime=True)
    model = fold_constants(model, error_ok=True, allow_onnxruntime_shape_inference=True)
    model = infer_shapes(model, allow_onnxruntime=True)
    ranked = _declare_output_ranks(model, declared)
    return model, {"outputs_ranked_by_a_run": ranked, "nodes_before": nodes_before, "nodes_after": len(model.graph.node), "empty_inputs_dropped": dropped,
                   "opset_upgraded": upgraded}


def _declare_output_ranks(model: Any, declared: Mapping[str, int]) -> int:
    """Give a rank to every graph output that shape inference left without a shape (through a
    contrib op or an If, say): ONNX's full check requires one, and ONNX Runtime checks an output's
    rank against it. The rank comes from one ONNX Runtime run on seeded inputs, else from the file's own
    declaration (not trusted first: one real file declared rank 2 for a rank-3 output). Every
    dimension stays symbolic (`<output>_d<i>`), since a size may depend on the data. Returns how many."""
    unknown = [o for o in model.graph.output if o.type.WhichOneof("value") == "tensor_type" and not o.type.tensor_type.HasField("shape")]
    if not unknown:
        return 0
    ranks = {**declared, **_ranks_by_a_run(model)}
    for o in unknown:
        if o.name in ranks:
            o.type.tensor_type.shape.SetInParent()
            for i in range(ranks[o.name]):
                o.type.tensor_type.shape.dim.add().dim_param = f"{o.name}_d{i}"
    return len(unknown)


def _ranks_by_a_run(model: Any) -> dict[str, int]:
    import numpy as np

    from bench.models.graph import cpu_session, session_feeds

    try:
        session = cpu_session(model.SerializeToString())
        return {o.name: np.ndim(v) for o, v in zip(session.get_outputs(), session.run(None, session_feeds(session)))}
    except Exception:  # the model's own declaration stands; the check that follows says what is wrong
        return {}


def save_model(model: Any, path: Path) -> None:
    import onnx

    if model.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.stem + ".data")
    else:
        onnx.save(model, str(path))


def prepare(source: Path, source_sha256: str, shapes: Mapping[str, Sequence[int | str]], cache: ArtifactCache) -> tuple[Path, bool, dict[str, Any]]:
    """(path of the prepared model, cache hit, facts), built once per (source, shapes). When the
    prepared model fails its checks (or preparation itself fails), the path is the source's and
    facts["preparation"] says why."""
    import json

    import onnx

    def build(d: Path) -> None:
        from bench.models.flops import count_flops
        from bench.models.graph import graph_problem, no_strays, one_line, outputs_differ

        try:
            with no_strays():
                model, facts = freeze(onnx.load(str(source)), shapes)
        except Exception as e:  # Polygraphy and onnx raise many kinds; each means "use the original"
            facts = {"preparation": f"original file: preparation failed ({one_line(e, 300)})"}
            (d / "facts.json").write_text(json.dumps({**facts, "gflop": None}))
            return
        counted = count_flops(model)
        # A count that leaves work out would flatter the engine: none, rather than too few.
        facts["gflop"] = None if counted["uncounted"] else counted["flops"] / 1e9
        save_model(model, d / "model.onnx")
        try:
            problem = graph_problem(d / "model.onnx") or outputs_differ(source, d / "model.onnx")
        except Exception as e:  # a session that cannot even be built, inputs of a type it cannot feed
            problem = f"its check could not run: {one_line(e, 300)}"
        if problem:
            for f in d.iterdir():
                if f.name != "facts.json":
                    f.unlink()
            facts["preparation"] = f"original file: the prepared model failed its check ({problem})"
            facts["gflop"] = None  # counted on a graph that is not the one that runs
        else:
            facts["preparation"] = "prepared"
        (d / "facts.json").write_text(json.dumps(facts))

    key = {"transform": "freeze", "version": PREPARE_VERSION, "source_sha256": source_sha256,
           "shapes": {k: list(v) for k, v in shapes.items()}, "polygraphy": _version("polygraphy"),
           "onnx-graphsurgeon": _version("onnx-graphsurgeon"), "onnx": _version("onnx"),
           "onnxruntime": _version("onnxruntime")}
    d, hit = cache.get_or_build("onnx-prepared", key, build)
    facts = json.loads((d / "facts.json").read_text())
    return (d / "model.onnx" if (d / "model.onnx").is_file() else source), hit, facts
