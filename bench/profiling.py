"""Where the time goes: each engine's own per-layer profile, mapped back to the ONNX graph it was given.

Engines name their work differently: ONNX Runtime keeps node names but renames what its optimizers
fuse (`<output>_nchwc`, `fused ...`), TVM names fused PrimFuncs after their ops (`fused_conv2d6_add5_relu3`),
TensorRT joins fused layers' names (`/conv1/Conv + /relu/Relu`) and lists their ONNX nodes in the
inspector's `Metadata`. Each mapping here turns an engine's records into `Layer`s, each naming the
ONNX nodes it covers and how it knows (`confidence`):

- exact: the engine kept the node's name, or the name of a tensor the node writes;
- by type: matched by op type and order (TVM's k-th conv2d kernel is the graph's k-th Conv);
- by position: a kernel whose ops name no node of the graph (a weight transpose, say), attributed to
  the node of the kernel next to it;
- unmapped: nothing to go on (a reformat, a runtime builtin): its time is stated, never spread.

A Profile also says what share of the end-to-end time its layers cover, and how much of that they
map: a profile that covers little says so (`note`). Profiles are taken in a process of their own,
after the timed ones; profiled times never replace timed ones.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any, Iterable, Mapping, Sequence

EXACT, BY_TYPE, BY_POSITION, UNMAPPED = "exact", "by type", "by position", "unmapped"
RUNTIME = "(runtime)"  # the engine's own calls (allocation, shape checks): profiled, not an ONNX node's
UNMAPPED_OP = "(unmapped)"
LOW_COVERAGE = 0.9  # below this share of the end-to-end time, a profile says it explains too little

# The op types that name a layer's kind when it covers several (a Conv fused with its Relu is a Conv).
HEAVY_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul",
             "FusedMatMul", "Attention", "MultiHeadAttention", "LSTM", "GRU", "RNN", "Einsum", "MaxPool", "AveragePool",
             "GlobalAveragePool", "GlobalMaxPool", "LayerNormalization", "BatchNormalization", "Softmax", "Resize")
# Ops whose outputs engines compute at build time on a graph of static shapes.
STATIC_OPS = {"Constant", "Shape", "Size", "ConstantOfShape"}


@dataclass
class Layer:
    kernel: str  # the engine's name for it
    nodes: tuple[str, ...]  # the ONNX nodes it covers
    op_types: tuple[str, ...]  # their op types, in graph order (RUNTIME or UNMAPPED_OP when none)
    confidence: str
    calls: int  # calls per forward pass
    median_us: float  # per call, over the profiled passes

    @property
    def us_per_pass(self) -> float:
        return self.median_us * self.calls

    @property
    def op_type(self) -> str:
        """The kind of layer: its heaviest op type (HEAVY_OPS order), else its first."""
        ranked = [op for op in HEAVY_OPS if op in self.op_types]
        return ranked[0] if ranked else (self.op_types[0] if self.op_types else UNMAPPED_OP)


@dataclass
class Profile:
    profiler: str  # which tool measured it
    layers: list[Layer]
    # The median end-to-end forward pass without the profiler, timed in the profiling process just
    # before it; the profiled pass's is facts["profiled_wall_us"].
    wall_us: float
    passes: int
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def covered_us(self) -> float:
        return sum(layer.us_per_pass for layer in self.layers)

    @property
    def mapped_us(self) -> float:
        return sum(layer.us_per_pass for layer in self.layers if layer.confidence != UNMAPPED)

    @property
    def profiled_wall_us(self) -> float:
        return float(self.facts.get("profiled_wall_us") or self.wall_us)

    @property
    def coverage(self) -> float:
        """The layers' sum as a share of the profiled forward pass: what the profiler attributes. Where
        each pass's records are known, the median over passes of that pass's share (facts["coverage"]):
        on a busy machine each pass loses time to preemption in a few different layers, so the sum of
        the layers' medians and the median pass are figures of different passes."""
        if "coverage" in self.facts:
            return float(self.facts["coverage"])
        return self.covered_us / self.profiled_wall_us if self.profiled_wall_us > 0 else 0.0

    @property
    def mapped(self) -> float:
        """The share of the profiled forward pass in layers mapped to ONNX nodes (per pass, as coverage)."""
        if "mapped" in self.facts:
            return float(self.facts["mapped"])
        return self.mapped_us / self.profiled_wall_us if self.profiled_wall_us > 0 else 0.0

    def share(self, layer: Layer) -> float:
        """The layer's share of the profiled forward pass: of the layers' time, times the coverage (a
        layer's median over the pass median would mix quiet and preempted passes)."""
        return layer.us_per_pass / self.covered_us * self.coverage if self.covered_us > 0 else 0.0

    @property
    def of_latency(self) -> float:
        """The layers' sum as a share of the unprofiled forward pass (the end-to-end latency): above 1
        when the profiler slowed the layers themselves."""
        return self.covered_us / self.wall_us if self.wall_us > 0 else 0.0

    @property
    def overhead(self) -> float:
        """The profiled forward pass over the unprofiled one (1.0: the profiler cost nothing)."""
        return self.profiled_wall_us / self.wall_us if self.wall_us > 0 else 1.0

    def estimated_us(self, layer: Layer) -> float:
        """A layer's time per forward pass without the profiler (Profile.estimates)."""
        return self.estimates[self.layers.index(layer)]

    @property
    def estimates(self) -> list[float]:
        """Each layer's time per forward pass without the profiler. Most of a profiler's cost falls
        between layers (ONNX Runtime's about 4 us a node) and is not in them; where the layers' sum
        still exceeds the unprofiled pass, the profiler slowed the layers themselves (ONNX Runtime
        gathers thread-pool statistics inside them): that excess comes off each call alike, and the
        estimates never sum above the unprofiled pass."""
        excess = max(0.0, self.covered_us - self.wall_us)
        calls = sum(x.calls for x in self.layers) or 1
        est = [max(0.0, x.us_per_pass - excess * x.calls / calls) for x in self.layers]
        total = sum(est)
        if excess and total > self.wall_us > 0:
            est = [e * self.wall_us / total for e in est]
        return est

    @property
    def note(self) -> str:
        """What a reader must know before trusting the breakdown ('' when nothing)."""
        said = []
        if self.coverage < LOW_COVERAGE:
            said.append(f"the profiled layers cover {self.coverage:.0%} of the profiled forward pass: the rest is time "
                        "between layers the profiler does not attribute (its own bookkeeping among it)")
        elif self.mapped < LOW_COVERAGE:
            said.append(f"only {self.mapped:.0%} of the forward pass maps to ONNX nodes")
        if self.coverage > 1 + (1 - LOW_COVERAGE):
            said.append(f"the layers sum to {self.coverage:.0%} of the profiled pass: some time is counted twice "
                        "(a layer inside another, such as a control-flow body)")
        if self.overhead > 1.25:
            said.append(f"the profiler slowed the forward pass {self.overhead:.2f}x ({self.wall_us / 1e3:.3g} -> "
                        f"{self.profiled_wall_us / 1e3:.3g} ms); layer times are estimated without it (Profile.estimated_us)")
        return "; ".join(said)

    def to_dict(self) -> dict[str, Any]:
        return {"profiler": self.profiler, "wall_us": self.wall_us, "passes": self.passes, "facts": self.facts,
                "layers": [asdict(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Profile":
        layers = [Layer(**{**x, "nodes": tuple(x["nodes"]), "op_types": tuple(x["op_types"])}) for x in d["layers"]]
        return cls(d["profiler"], layers, float(d["wall_us"]), int(d["passes"]), dict(d.get("facts") or {}))


# --- the ONNX graph side ------------------------------------------------------------------------------


@dataclass
class Graph:
    """What the mappings need of an ONNX graph: its nodes in order, who writes each tensor, who reads it."""

    order: list[str]  # node names, graph order (an unnamed node is <op>_<index>, a repeated name gets #<index>)
    op: dict[str, str]  # node -> op type
    producer: dict[str, str]  # tensor -> node
    consumers: dict[str, list[str]]  # tensor -> nodes
    inputs: dict[str, list[str]]  # node -> input tensors
    outputs: dict[str, list[str]]  # node -> output tensors
    static: set[str]  # nodes an engine computes at build time (constants, shapes of a static graph)
    biased: set[str]  # Conv/Gemm nodes with a bias input (engines add it as a separate op)
    pos: dict[str, int] = field(default_factory=dict)  # node -> its index in `order`
    alias: dict[str, str] = field(default_factory=dict)  # other names engines give a node -> its name here

    @classmethod
    def of(cls, model: Any) -> "Graph":
        g = model.graph
        known = {i.name for i in g.initializer} - {i.name for i in g.input}  # an initializer that is also an input can be fed
        graph = cls([], {}, {}, {}, {}, {}, set(), set())
        kept = 0
        for i, node in enumerate(g.node):
            name = node.name or f"{node.op_type}_{i}"
            name = name if name not in graph.op else f"{name}#{i}"
            graph.pos[name] = len(graph.order)
            graph.order.append(name)
            graph.op[name] = node.op_type
            graph.inputs[name] = [t for t in node.input if t]
            graph.outputs[name] = [o for o in node.output if o]
            if not node.name and graph.outputs[name]:  # TensorRT's ONNX parser names an unnamed node after its first output
                graph.alias[f"node_of_{graph.outputs[name][0]}"] = name
            if not node.name:  # ONNX Runtime: <op>_<index> counting the nodes it keeps (Constant nodes become initializers)
                graph.alias.setdefault(f"{node.op_type}_{kept}", name)
            kept += node.op_type != "Constant"
            for t in graph.outputs[name]:
                graph.producer[t] = name
            for t in graph.inputs[name]:
                graph.consumers.setdefault(t, []).append(name)
            ins = graph.inputs[name]
            if node.op_type in STATIC_OPS or (ins and all(t in known for t in ins)):
                graph.static.add(name)
                known.update(graph.outputs[name])
            if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(ins) == 3:
                graph.biased.add(name)
        return graph

    def find(self, name: str) -> str | None:
        """The node an engine's name for it refers to, or None."""
        return name if name in self.op else self.alias.get(name)

    def owner_upstream(self, node: str, owner: Mapping[str, str]) -> str | None:
        """The owner of the node writing `node`'s first input that has one: an engine that fused a
        chain (Conv -> Add -> Relu) named the fused kernel after its head, or its tail's output."""
        for t in self.inputs.get(node, []):
            p = self.producer.get(t)
            if p is not None and p in owner:
                return owner[p]
        return None

    def owner_downstream(self, node: str, owner: Mapping[str, str]) -> str | None:
        """The owner of the first node downstream of `node` that has one, or None."""
        seen, todo = set(), [node]
        while todo:
            n = todo.pop(0)
            for t in self.outputs.get(n, []):
                for c in self.consumers.get(t, []):
                    if c in owner:
                        return owner[c]
                    if c not in seen:
                        seen.add(c)
                        todo.append(c)
        return None


def _layer(kernel: str, nodes: Iterable[str], graph: Graph, confidence: str, calls: int, median_us: float) -> Layer:
    ordered = sorted(set(nodes), key=graph.pos.__getitem__)
    if not ordered:
        return Layer(kernel, (), (RUNTIME if confidence == RUNTIME else UNMAPPED_OP,), UNMAPPED, calls, median_us)
    return Layer(kernel, tuple(ordered), tuple(graph.op[n] for n in ordered), confidence, calls, median_us)


def _claim_fused(graph: Graph, covers: dict[str, set[str]], by_tail: set[str]) -> None:
    """Nodes no kernel names (an engine fused them away) go to the kernel they were fused into: a
    kernel known by its chain's last tensor (`by_tail`: ONNX Runtime's `<tensor>_nchwc`, or the
    optimized node's outputs) takes the nodes feeding it that nothing else reads; a kernel known by
    its chain's first node takes the nodes only that node feeds; what is left goes to the first
    owned node downstream, else upstream. Nodes computed at build time go nowhere."""
    owner = {n: k for k, nodes in covers.items() for n in nodes}

    def claim(n: str, k: str) -> None:
        covers[k].add(n)
        owner[n] = k

    def reader(n: str) -> str | None:
        readers = {c for t in graph.outputs.get(n, []) for c in graph.consumers.get(t, [])}
        return next(iter(readers)) if len(readers) == 1 else None

    free = [n for n in graph.order if n not in owner and n not in graph.static]
    for n in reversed(free):
        r = reader(n)
        if r is not None and r in owner and owner[r] in by_tail:
            claim(n, owner[r])
    for n in free:
        if n in owner:
            continue
        for t in graph.inputs.get(n, []):
            p = graph.producer.get(t)
            if p is not None and p in owner and reader(p) == n:
                claim(n, owner[p])
                break
    for n in free:
        if n not in owner:
            k = graph.owner_downstream(n, owner) or graph.owner_upstream(n, owner)
            if k is not None:
                claim(n, k)


# --- ONNX Runtime: its session profiler, and the graph it optimized ----------------------------------


def ort_profile(events: Sequence[Mapping[str, Any]], model: Any, optimized: Any | None, warmup_runs: int = 0,
                wall_us: float | None = None) -> Profile:
    """Layers from ONNX Runtime's profiler events (`end_profiling()`'s JSON: a "Node" event
    `<node>_kernel_time` per node run, a "Session" event `model_run` per run). A node the optimizer
    kept is named as in the model; one it made carries the name of a tensor of the model in its own
    or its outputs' names (`<tensor>_nchwc`), read from the optimized graph when given. The first
    `warmup_runs` runs (and every node event inside them) are left out. `wall_us`: the unprofiled
    forward pass (default: the profiled `model_run`)."""
    graph = Graph.of(model)
    events = _after_runs(events, warmup_runs)
    runs = _model_runs(events)
    times: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    kept: list[tuple[float, float, str]] = []  # (ts, dur, kernel) of the node events kept
    top = {n.name for n in optimized.graph.node} if optimized is not None else None
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            args = e.get("args") or {}
            node = name[: -len("_kernel_time")] or f"{args.get('op_name', '?')}@{args.get('node_index', '?')}"
            if top is not None and node not in top and graph.find(node) is None:
                continue  # a node of an If/Loop/Scan body: its time is inside its parent's
            times.setdefault(node, []).append(float(e["dur"]))
            ops[node] = str(args.get("op_name", "?"))
            kept.append((float(e["ts"]), float(e["dur"]), node))
    passes = max(len(runs), 1)
    copies = {k for k in times if ops[k].startswith(("Reorder", "Memcpy"))}  # a layout change or a copy ONNX Runtime added
    opt_outputs = {n.name: [o for o in n.output if o] for n in optimized.graph.node} if optimized is not None else {}
    covers: dict[str, set[str]] = {}
    by_tail: set[str] = set()
    for kernel in times:
        if kernel in copies:
            covers[kernel] = set()  # it writes a model tensor, computes no node
            continue
        head = graph.find(kernel)
        tail = {graph.producer[t] for t in _model_tensors([kernel, *opt_outputs.get(kernel, [])], graph.producer)} - {head}
        covers[kernel] = ({head} if head else set()) | tail
        if tail:
            by_tail.add(kernel)
    _claim_fused(graph, covers, by_tail)  # a copy owns no node, so it is never given one
    layers = []
    for kernel, durs in times.items():
        calls = max(1, round(len(durs) / passes))
        layer = _layer(kernel, covers[kernel], graph, EXACT if covers[kernel] else UNMAPPED, calls, median(durs))
        if not covers[kernel]:
            layer.op_types = (ops[kernel] if kernel in copies else UNMAPPED_OP,)
        layers.append(layer)
    profiled = median([dur for _, dur in runs]) if runs else sum(x.us_per_pass for x in layers)
    facts: dict[str, Any] = {"profiled_wall_us": profiled, **_ort_shares(runs, kept, {k for k, v in covers.items() if v})}
    return Profile("onnxruntime session profiler", layers, wall_us or profiled, passes, facts)


def _model_runs(events: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """(ts, dur) of each `model_run`, in time order."""
    return sorted((float(e["ts"]), float(e["dur"])) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")


def _ort_shares(runs: Sequence[tuple[float, float]], kept: Sequence[tuple[float, float, str]], mapped: set[str]) -> dict[str, float]:
    """Per `model_run` (ts, dur): the share of it in the kept node events, and in mapped ones; their medians."""
    cov, mapd = [], []
    for ts, dur in runs:
        inside = [(d, n) for t, d, n in kept if ts <= t <= ts + dur]
        if dur > 0 and inside:
            cov.append(sum(d for d, _ in inside) / dur)
            mapd.append(sum(d for d, n in inside if n in mapped) / dur)
    return {"coverage": median(cov), "mapped": median(mapd)} if cov else {}


def _after_runs(events: Sequence[Mapping[str, Any]], k: int) -> list[Mapping[str, Any]]:
    """The events after the k-th `model_run` ended (the profiler starts with the session)."""
    runs = _model_runs(events)
    if k <= 0 or not runs:
        return list(events)
    cutoff = runs[k - 1][0] + runs[k - 1][1] if k <= len(runs) else float("inf")
    return [e for e in events if float(e.get("ts", 0)) >= cutoff]


def unprofiled_us(call: Any, min_passes: int = 5, min_s: float = 0.3, max_passes: int = 200) -> float:
    """The median of one call's wall time, over at least `min_passes` calls and `min_s` seconds
    (after one warm call): the end-to-end time a profile's layers are a share of."""
    import time

    call()
    times: list[float] = []
    run_passes(lambda: times.append(_timed_us(call, time.perf_counter_ns)), min_passes, min_s, max_passes)
    return median(times)


def _timed_us(call: Any, clock: Any) -> float:
    t0 = clock()
    call()
    return (clock() - t0) / 1e3


def vm_call_times(vm: Any, sync: Any = lambda: None) -> list[tuple[str, int]]:
    """Time every call a Relax VM makes from now on (its instrument hook; TVM 0.27's VM has no
    profile() on CPU builds): the returned list gets (function name, ns) per finished call, in call
    order, the VM's own builtins (`vm.builtin.*`) among them; clear it between passes. `sync` waits
    for the device around each call (a GPU VM)."""
    import time

    calls: list[tuple[str, int]] = []
    starts: list[int] = []

    def instrument(func: Any, name: str, before_run: bool, ret_value: Any, *rest: Any) -> int:
        sync()
        if before_run:
            starts.append(time.perf_counter_ns())
        else:
            calls.append((str(name), time.perf_counter_ns() - starts.pop()))
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

    vm.set_instrument(instrument)
    return calls


def run_passes(fn: Any, min_passes: int = 3, min_s: float = 0.5, max_passes: int = 50) -> int:
    """Call `fn` (one profiled forward pass) at least `min_passes` times and for at least `min_s`
    seconds, at most `max_passes` times; returns how many."""
    import time

    start, n = time.perf_counter(), 0
    while n < min_passes or (time.perf_counter() - start < min_s and n < max_passes):
        fn()
        n += 1
    return n


def _model_tensors(names: Iterable[str], producer: Mapping[str, str]) -> set[str]:
    """Tensors of the model named by `names`: a name itself, else the longest tensor name it starts
    with (ONNX Runtime's layout transformer writes `<tensor>_nchwc`)."""
    found = set()
    for name in names:
        if name in producer:
            found.add(name)
            continue
        prefixes = [t for t in producer if name.startswith(t) and len(name) > len(t) and not name[len(t)].isalnum()]
        if prefixes:
            found.add(max(prefixes, key=len))
    return found


# --- TVM: Relax VM kernel calls, matched to the graph by op type and order ---------------------------

# Relax op names (as TVM names the PrimFuncs it legalizes them into) -> ONNX op types they implement.
TVM_OPS: dict[str, tuple[str, ...]] = {
    "conv1d": ("Conv",), "conv2d": ("Conv",), "conv3d": ("Conv",), "conv2d_transpose": ("ConvTranspose",),
    "conv1d_transpose": ("ConvTranspose",), "matmul": ("MatMul", "Gemm"), "dense": ("MatMul", "Gemm"),
    "max_pool2d": ("MaxPool",), "avg_pool2d": ("AveragePool",), "max_pool1d": ("MaxPool",), "avg_pool1d": ("AveragePool",),
    "adaptive_avg_pool2d": ("GlobalAveragePool",), "mean": ("GlobalAveragePool", "ReduceMean"), "max": ("GlobalMaxPool", "ReduceMax"),
    "sum": ("ReduceSum", "Sum"), "add": ("Add", "Sum", "BatchNormalization"), "subtract": ("Sub", "BatchNormalization"),
    "multiply": ("Mul", "BatchNormalization"), "divide": ("Div", "BatchNormalization"), "sqrt": ("Sqrt", "BatchNormalization"),
    "rsqrt": ("BatchNormalization", "LayerNormalization"), "maximum": ("Clip", "Max", "Relu"), "minimum": ("Clip", "Min"),
    "relu": ("Relu",), "clip": ("Clip",), "sigmoid": ("Sigmoid", "HardSigmoid", "HardSwish"), "tanh": ("Tanh",),
    "erf": ("Erf", "Gelu"), "gelu": ("Gelu",), "silu": ("Sigmoid", "Mul"), "softmax": ("Softmax",), "exp": ("Exp",),
    "power": ("Pow",), "layer_norm": ("LayerNormalization",), "batch_norm": ("BatchNormalization",),
    "reshape": ("Reshape", "Flatten", "Squeeze", "Unsqueeze"), "transpose": ("Transpose",), "concatenate": ("Concat",),
    "split": ("Split",), "strided_slice": ("Slice",), "take": ("Gather",), "resize2d": ("Resize",), "astype": ("Cast",),
    "quantize": ("QuantizeLinear",), "dequantize": ("DequantizeLinear",), "where": ("Where",), "squeeze": ("Squeeze",),
    "expand_dims": ("Unsqueeze",), "broadcast_to": ("Expand",), "image_resize2d": ("Resize",), "pad": ("Pad",),
}
ANCHORS = ("conv1d", "conv2d", "conv3d", "conv2d_transpose", "conv1d_transpose", "matmul", "dense", "max_pool2d", "avg_pool2d",
           "max_pool1d", "avg_pool1d", "adaptive_avg_pool2d")
_VOCAB = sorted(TVM_OPS, key=len, reverse=True)
_TOKEN_OF_KIND = {TVM_OPS[a][0]: a for a in reversed(ANCHORS)}  # an anchor kind's first token (conv2d for Conv)
WINDOW = 6  # graph positions a non-anchor op may sit beyond the anchors around it (sibling branches)


def tvm_tokens(kernel: str) -> list[str]:
    """The Relax ops a kernel's name lists, in order: 'fused_conv2d6_add5_relu3' -> [conv2d, add, relu]."""
    rest = kernel[len("fused_"):] if kernel.startswith("fused_") else kernel
    out = []
    while rest:
        for word in _VOCAB:
            m = re.match(re.escape(word) + r"\d*(?:_|$)", rest)
            if m:
                out.append(word)
                rest = rest[m.end():]
                break
        else:
            head, _, rest = rest.partition("_")
            out.append(re.sub(r"\d+$", "", head))
    return out


def _types_of(token: str) -> tuple[str, ...]:
    return TVM_OPS.get(token) or (token,)


def _matches(token: str, op_type: str) -> bool:
    return op_type in _types_of(token) or op_type.lower() == token.lower()


def tvm_profile(passes: Sequence[Sequence[tuple[str, int]]], walls_ns: Sequence[int], model: Any, wall_us: float | None = None) -> Profile:
    """Layers from the Relax VM's instrumented calls: each pass a list of (function, ns) in call
    order (the VM's builtins, `vm.builtin.*`, are the runtime's own). Call sites, not function
    names, are layers: one PrimFunc runs at every node of its shape. `walls_ns`: each profiled
    pass end to end; `wall_us`: the unprofiled pass (default: the profiled one)."""
    graph = Graph.of(model)
    first = list(passes[0])
    per_site = [[p[i][1] for p in passes if i < len(p) and p[i][0] == name] for i, (name, _) in enumerate(first)]
    sites = [(i, name) for i, (name, _) in enumerate(first)]
    kernels = [(i, name) for i, name in sites if not name.startswith("vm.")]
    mapped = _match_in_order(graph, [tvm_tokens(name) for _, name in kernels])
    layers = []
    kernel_at = {i: k for k, (i, _) in enumerate(kernels)}
    for i, name in sites:
        us = median(per_site[i]) / 1e3 if per_site[i] else 0.0
        if i not in kernel_at:
            layers.append(_layer(name, (), graph, RUNTIME, 1, us))
            continue
        nodes, confidence = mapped[kernel_at[i]]
        layers.append(_layer(name, nodes, graph, confidence if nodes else UNMAPPED, 1, us))
    profiled = median(walls_ns) / 1e3
    mapped_sites = {i for i, _ in sites if i in kernel_at and mapped[kernel_at[i]][0]}
    cov = [sum(ns for _, ns in p) / w for p, w in zip(passes, walls_ns) if w > 0]
    mapd = [sum(ns for i, (_, ns) in enumerate(p) if i in mapped_sites) / w for p, w in zip(passes, walls_ns) if w > 0]
    facts = {"profiled_wall_us": profiled, **({"coverage": median(cov), "mapped": median(mapd)} if cov else {})}
    return Profile("tvm relax vm instrument", _merge_runtime(layers), wall_us or profiled, len(passes), facts)


def _merge_runtime(layers: list[Layer]) -> list[Layer]:
    """The runtime's calls, one layer per builtin (hundreds of microsecond calls say little one by one)."""
    out, runtime = [], {}
    for layer in layers:
        if layer.op_types == (RUNTIME,):
            r = runtime.setdefault(layer.kernel, Layer(layer.kernel, (), (RUNTIME,), UNMAPPED, 0, 0.0))
            r.median_us = (r.median_us * r.calls + layer.median_us) / (r.calls + 1)
            r.calls += 1
        else:
            out.append(layer)
    return out + list(runtime.values())


def _match_in_order(graph: Graph, kernels: list[list[str]]) -> list[tuple[list[str], str]]:
    """Each kernel's ONNX nodes. Anchors (convolutions, matmuls, pools) take the graph's nodes of
    their kind in order; the other ops take the first free node of a matching type near their
    anchors (or the node just matched, for an op that engines compute in several steps: a Clip is
    a maximum then a minimum); an op's bias `add` is its anchor's; what matches nothing goes to the
    node matched last."""
    runtime_nodes = [n for n in graph.order if n not in graph.static]
    pos = {n: i for i, n in enumerate(runtime_nodes)}
    free = set(runtime_nodes)
    anchor_of: list[str | None] = [None] * len(kernels)
    anchor_kinds: dict[str, int] = {}  # ONNX op types an anchor stands for -> anchor kernels
    for k, tokens in enumerate(kernels):  # anchors first, in call order
        for tok in tokens:
            if tok in ANCHORS:
                anchor_kinds[_types_of(tok)[0]] = anchor_kinds.get(_types_of(tok)[0], 0) + 1
                node = next((n for n in runtime_nodes if n in free and _matches(tok, graph.op[n])), None)
                if node is not None:
                    free.discard(node)
                    anchor_of[k] = node
                break
    # The k-th kernel of a kind is the k-th node only when both count the same: else say so
    # (an engine that splits or merges one of them shifts every later match).
    miscounted = {kind for kind, n in anchor_kinds.items()
                  if n != sum(1 for m in runtime_nodes if _matches(_TOKEN_OF_KIND[kind], graph.op[m]))}
    out = []
    last_anchor, last, bias_open = None, None, False
    for k, tokens in enumerate(kernels):
        nodes, by_position = [], False
        if anchor_of[k] is not None:
            last_anchor, bias_open = anchor_of[k], anchor_of[k] in graph.biased
        nxt = next((anchor_of[j] for j in range(k + 1, len(kernels)) if anchor_of[j] is not None), None)
        lo = pos[last_anchor] - WINDOW if last_anchor is not None else 0
        hi = pos[nxt] + WINDOW if nxt is not None else len(runtime_nodes)
        for tok in tokens:
            node = _node_for(tok, k, anchor_of, nodes, graph, last, bias_open and last_anchor is not None)
            if node is None:
                node = next((n for n in runtime_nodes[max(lo, 0):hi] if n in free and _matches(tok, graph.op[n])), None)
                free.discard(node)
            elif node == last_anchor and tok == "add" and bias_open:
                bias_open = False
            if node is not None:
                nodes.append(node)
                last = node
            else:
                by_position = True
        if not nodes and (last or nxt):
            nodes.append(last or nxt)
        shifted = anchor_of[k] is not None and any(_types_of(t)[0] in miscounted for t in tokens if t in ANCHORS)
        out.append((nodes, BY_POSITION if shifted or (by_position and len(nodes) <= 1 and anchor_of[k] is None) else BY_TYPE))
    return out


MULTI_STEP_OPS = {"Clip", "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "Gelu",
                  "HardSwish", "HardSigmoid", "Softmax", "Mish", "Resize"}


def _node_for(tok: str, k: int, anchor_of: list[str | None], nodes: list[str], graph: Graph, last: str | None,
              bias_open: bool) -> str | None:
    """The node a token belongs to without claiming a new one: its kernel's anchor, the anchor's bias
    add, or another step of the multi-step op matched last; None to look for a free node."""
    anchor = anchor_of[k]
    if tok in ANCHORS and anchor is not None and anchor not in nodes:
        return anchor
    if tok == "add" and bias_open:
        return next((a for a in reversed(anchor_of[: k + 1]) if a is not None), None)
    if last is not None and graph.op[last] in MULTI_STEP_OPS and _matches(tok, graph.op[last]):
        return last
    return None


# --- TensorRT: the engine inspector's layers and the per-layer profiler --------------------------------


def trt_nodes(layer: Mapping[str, Any], graph: Graph) -> tuple[list[str], str]:
    """The ONNX nodes a TensorRT layer covers: its inspector `Metadata` lists them ("[ONNX Layer:
    /conv1/Conv]\\x1f[ONNX Layer: /relu/Relu]", TensorRT 8.6+ with ProfilingVerbosity.DETAILED);
    else its name does ("/conv1/Conv + /relu/Relu"); a reformat TensorRT inserted covers none."""
    name = str(layer.get("Name", ""))
    if layer.get("LayerType") == "Reformat" or name.startswith("Reformatting "):
        return [], UNMAPPED  # names the layer it feeds, which it is not
    named = re.findall(r"\[ONNX Layer: ([^\]]+)\]", str(layer.get("Metadata") or ""))
    if named:
        return [m for m in map(graph.find, named) if m is not None], EXACT
    parts = [p.strip() for p in re.split(r" \+ |\|\|", name)]
    found = [m for m in map(graph.find, parts) if m is not None]
    if not found:
        # Myelin regions: "{ForeignNode[/a/MatMul.../b/Add]}" names its first and last nodes (one node: no "...")
        span = re.search(r"ForeignNode\[(.+?)(?:\.\.\.(.+?))?\]", name)
        ends = [graph.find(span.group(1)), graph.find(span.group(2) or span.group(1))] if span else [None]
        if None not in ends:
            i, j = sorted(graph.pos[e] for e in ends)
            return [n for n in graph.order[i:j + 1] if n not in graph.static], BY_POSITION
    return found, EXACT


def trt_profile(inspector: Mapping[str, Any], records: Sequence[Mapping[str, Any]], model: Any, wall_us: float | None = None,
                profiled_wall_us: float | None = None) -> Profile:
    """Layers from TensorRT's engine inspector JSON (`get_engine_information(LayerInformationFormat.JSON)`:
    {"Layers": [{"Name", "LayerType", "Metadata", ...}]}) and per-layer times in trtexec's
    `--exportProfile` format ([{"count": N}, {"name", "timeMs", "averageMs", "medianMs", ...}, ...]),
    which IProfiler.report_layer_time's records are written in too. `wall_us` and `profiled_wall_us`:
    the end-to-end enqueue-to-sync time of a pass without and with the profiler (default: the other
    one, and without either the layers' sum, which then covers all of it)."""
    graph = Graph.of(model)
    count = next((int(r["count"]) for r in records if "count" in r), 1)
    by_name = {str(layer.get("Name")): layer for layer in inspector.get("Layers", []) if isinstance(layer, Mapping)}
    layers = []
    for r in records:
        if "name" not in r:
            continue
        name = str(r["name"])
        nodes, confidence = trt_nodes(by_name.get(name, {"Name": name}), graph)
        us = float(r.get("medianMs", r.get("averageMs", 0.0))) * 1e3
        layer = _layer(name, nodes, graph, confidence if nodes else UNMAPPED, 1, us)
        if not nodes and "Reformat" in name:
            layer.op_types = ("(reformat)",)
        layers.append(layer)
    profiled = profiled_wall_us or wall_us or sum(layer.us_per_pass for layer in layers)
    return Profile("tensorrt IProfiler + engine inspector", layers, wall_us or profiled, count, {"profiled_wall_us": profiled})
