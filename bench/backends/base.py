"""The protocol every backend implements, and nothing else.

A backend says whether it is usable here (and why not), compiles one variant of a model for one
precision and batch size, and hands back a `Compiled` object that runs it. The runner drives every
backend through this protocol alone; it never asks which backend it holds.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from bench.cache import ArtifactCache
from bench.options import BackendOptions

if TYPE_CHECKING:
    from bench.models.prepare import PreparedModel

Feeds = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Availability:
    usable: bool
    reason: str = ""  # why not, when not usable
    versions: Mapping[str, str] = field(default_factory=dict)


def _no_calibration() -> list:
    raise RuntimeError("this request carries no calibration data")


@dataclass(frozen=True)
class CompileRequest:
    model: "PreparedModel"
    precision: str
    batch_size: int
    shapes: Mapping[str, tuple[int, ...]]
    threads: int
    work_dir: Path  # scratch space for artifacts of this cell
    cache: ArtifactCache = field(default_factory=lambda: ArtifactCache(Path(tempfile.gettempdir()) / "bench-cache", enabled=False))
    calibration: Callable[[], list[dict[str, np.ndarray]]] = _no_calibration  # batch-1 feeds, for int8
    options: Mapping[str, Any] = field(default_factory=dict)  # the config's backend_options for this backend
    batch_sizes: tuple[int, ...] = ()  # every batch size of the grid, for engines built once for all
    notes: dict[str, Any] = field(default_factory=dict)  # what conversions did (bench.precision), for the row


def execution_summary(counts: Mapping[str, int]) -> str:
    """'int8', 'fp16', or 'mixed: fp32 x3, int8 x20', from compute-op counts per element type."""
    live = {k: v for k, v in counts.items() if v}
    if not live:
        return "unknown"
    if len(live) == 1:
        return next(iter(live))
    return "mixed: " + ", ".join(f"{k} x{v}" for k, v in sorted(live.items(), key=lambda kv: -kv[1]))


class Unsupported(Exception):
    """This backend cannot build the requested variant (a precision it lacks, say): the cell is skipped."""


@runtime_checkable
class Compiled(Protocol):
    """What `Backend.compile` returns: every attribute the harness uses is here (CompiledBase gives
    the optional ones their defaults)."""

    # What actually ran, recorded in the row: variant (e.g. untuned), provider, target, threads.
    facts: Mapping[str, Any]
    # The clock the harness times `prepare`'s callable with: nanoseconds, monotonic. A GPU backend
    # returns one that synchronizes its device.
    clock: Callable[[], int]
    # A timer of one call, `interval(fn) -> ns`, used instead of two clock readings when set
    # (TensorRT: a CUDA event pair); None for most backends.
    interval: Callable[[Callable[[], object]], int] | None
    # What one timed call spans, in words, published as the row's `timed_region`. The rule for every
    # backend: inputs resident on the device the engine computes on, converted and placed before
    # timing; outputs written to buffers allocated before timing where the engine allows it (else
    # say who allocates them); nothing copied back to the host; a device clock that synchronizes.
    timed_region: str
    # Why this compiled variant cannot run here (compiled for a device that is elsewhere, say): the
    # cell is `skipped` with it after compiling. Empty when it can run.
    cannot_run: str

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """Outputs by name, as numpy arrays, for validation."""

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        """A zero-argument forward call with its inputs already converted and placed."""

    def second_opinion(self, samples_ns: list[int]) -> dict[str, Any]:
        """Columns from another tool timing the same artifact (TensorRT: trtexec), asked once per
        cell after the timed loop, inside the timing lock; {} for none."""

    def release(self) -> None: ...


class CompiledBase:
    """Defaults of Compiled's optional members: no interval timer, runnable, no second opinion, no
    per-layer profiler.

    `profile(feeds) -> bench.profiling.Profile`, where a backend has one: the engine's own per-layer
    profiler over a few forward passes on `feeds`, its layers mapped to the ONNX graph the engine was
    given (bench.profiling), with the unprofiled pass timed just before. The harness calls it in a
    process of its own after the cell's timed ones (bench.jobs.profile_job), never in one that times."""

    interval: Callable[[Callable[[], object]], int] | None = None
    cannot_run: str = ""
    profile: Callable[[Feeds], Any] | None = None

    def second_opinion(self, samples_ns: list[int]) -> dict[str, Any]:
        return {}


@runtime_checkable
class Backend(Protocol):
    """What the registry's factories return: every attribute the harness uses is here (BackendBase
    gives the optional ones their defaults)."""

    name: str
    variant: str  # the kind of variant compile builds, e.g. "untuned"; also reported by Compiled.facts
    precisions: tuple[str, ...]  # precisions this backend can build
    # True for an engine built once for every batch size (TensorRT profiles): its model keeps a
    # dynamic batch axis. Otherwise the model is frozen to the cell's shapes (bench.models.freeze).
    keeps_dynamic_batch: bool
    # The pydantic model of backend_options.<name> (bench.options), or None to pass them unchecked.
    Options: type[BackendOptions] | None
    # Modules the worker fork server imports once for this backend's cells (bench.worker).
    preload: tuple[str, ...]

    def availability(self) -> Availability: ...

    def compile(self, request: CompileRequest) -> Compiled: ...


class BackendBase:
    """Defaults of Backend's optional members."""

    keeps_dynamic_batch: bool = False
    Options: type[BackendOptions] | None = None
    preload: tuple[str, ...] = ()


BACKEND_MEMBERS = ("name", "variant", "precisions", "keeps_dynamic_batch", "Options", "preload", "availability", "compile")
COMPILED_MEMBERS = ("facts", "clock", "interval", "timed_region", "cannot_run", "run", "prepare", "second_opinion", "release")


def lacking(obj: Any, members: tuple[str, ...], what: str, base: str) -> str | None:
    """Why `obj` cannot serve as a `what` (the members it lacks, and how to get them), or None."""
    gaps = [m for m in members if not hasattr(obj, m)]
    if not gaps:
        return None
    return (f"{what} {type(obj).__module__}.{type(obj).__qualname__} lacks {', '.join(gaps)}: subclass "
            f"bench.backends.base.{base}, which gives the optional members their defaults (see the protocol in bench/backends/base.py)")


HOST_CLOCK: Callable[[], int] = time.perf_counter_ns


def import_framework(module: str, package: str, hint: str) -> tuple[Any, Availability | None]:
    """(the module, None), or (None, why it is unusable): not installed, or broken on import."""
    try:
        return importlib.import_module(module), None
    except ImportError as e:
        return None, Availability(False, f"{package} is not installed ({e}); {hint}")
    except Exception as e:  # a broken native library raises all sorts
        return None, Availability(False, f"{package} failed to import: {type(e).__name__}: {e}")


def offending_node(exc: BaseException) -> Any | None:
    """The ONNX node an importer was converting when it raised: the innermost frame of the
    traceback holding a local `node` that is an onnx NodeProto (TVM's and most converters' loops
    name it so). None when no frame does."""
    try:
        from onnx import NodeProto
    except ImportError:
        return None
    found = None
    tb = exc.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get("node")
        if isinstance(node, NodeProto):
            found = node
        tb = tb.tb_next
    return found


class ImportFailed(RuntimeError):
    """A backend's importer refused the model; the message names the node(s) it refused."""

    @classmethod
    def wrap(cls, importer: str, exc: BaseException, model: Any = None) -> "ImportFailed":
        # The whole message, on one line (the row keeps its head and tail: bench.jobs.error_text); TVM
        # puts the cause after its IR dump ("... uses datatype float32 on the LHS").
        message = " ".join(str(exc).split()) or type(exc).__name__
        named = _ops_named_in(message, model) if model is not None else ""
        if named:
            # An importer that checks every op first raises after its loop: the loop's last node is
            # not the one it refused, the ops its message names are.
            where = f" at {named}"
        else:
            node = offending_node(exc)
            where = f" at node {node.name or '<unnamed>'!r} ({node.op_type})" if node is not None else ""
        return cls(f"{importer} failed{where}: {type(exc).__name__}: {message}")


def _ops_named_in(message: str, model: Any) -> str:
    """The model's nodes of the op types a message names ("... not supported ...: LSTM, ConvInteger")."""
    import re

    from bench.models.graph import all_nodes, name_nodes, nodes_of

    listed = re.search(r"operators? (?:are|is) not (?:supported|implemented)[^:]*:(.*)", message, re.IGNORECASE)
    if not listed:
        return ""
    words = set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", listed.group(1)))
    ops = {n.op_type for n in all_nodes(model.graph)} & words
    return name_nodes(nodes_of(model, ops)) if ops else ""


def refused_ops(model: Any, supported: set[str], importer: str) -> str:
    """Why `importer` cannot take the model, naming every node whose op it has no converter for
    (subgraphs included), or '' when it has one for each."""
    from bench.models.graph import all_nodes, name_nodes, nodes_of

    missing = {n.op_type for n in all_nodes(model.graph)} - supported
    if not missing:
        return ""
    return f"{importer} has no converter for {name_nodes(nodes_of(model, missing))}"
