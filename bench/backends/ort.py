"""ONNX Runtime on its CPU execution provider."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from bench.backends.base import HOST_CLOCK, Availability, CompileRequest, Feeds

PROVIDER = "CPUExecutionProvider"


class OnnxRuntimeBackend:
    name = "onnxruntime"
    variant = "default"
    precisions = ("fp32",)

    def availability(self) -> Availability:
        try:
            import onnxruntime as ort
        except ImportError as e:
            return Availability(False, f"onnxruntime is not installed ({e}); pip install 'bench[cpu]'")
        if PROVIDER not in ort.get_available_providers():
            return Availability(False, f"{PROVIDER} missing; available: {ort.get_available_providers()}")
        return Availability(True, versions={"onnxruntime": ort.__version__})

    def compile(self, request: CompileRequest) -> "OrtCompiled":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = request.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(request.model.path), sess_options=opts, providers=[PROVIDER])
        used = session.get_providers()
        if not used or used[0] != PROVIDER:
            # A session silently running elsewhere would publish the wrong device's numbers.
            raise RuntimeError(f"asked for {PROVIDER}, the session runs on {used}")
        facts = {
            "variant": self.variant,
            "provider": ",".join(used),
            "threads": request.threads,
            "backend_version": ort.__version__,
            "executes_as": request.precision,
        }
        return OrtCompiled(session, facts)


class OrtCompiled:
    clock = staticmethod(HOST_CLOCK)

    def __init__(self, session: Any, facts: dict[str, Any]):
        self.session = session
        self.facts = facts
        self._outputs = [o.name for o in session.get_outputs()]

    def run(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, dict(feeds))))

    def prepare(self, feeds: Feeds) -> Callable[[], object]:
        run, names, inputs = self.session.run, self._outputs, {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        return lambda: run(names, inputs)

    def release(self) -> None:
        self.session = None
