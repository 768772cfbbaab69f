"""Workers forked from a preloaded server: fresh processes without paying the imports, with the
parent's environment, and thread pools that belong to the cell."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from bench.worker import _ServerProcess


def _threads(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _probe(queue, onnx_path: str) -> None:
    """Runs in a forked worker: what it inherited, and the pools a cell's threads setting gives."""
    import sys

    out = {"threads_at_start": _threads(), "server_threads": _threads(os.getppid()),
           "preloaded": [m for m in ("tvm", "onnx", "bench.jobs") if m in sys.modules]}
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    sess.run(None, {sess.get_inputs()[0].name: np.ones((1, 8), np.float32)})
    out["threads_after_ort"] = _threads()
    os.environ["TVM_NUM_THREADS"] = "2"
    import tvm

    out["tvm_threads"] = int(tvm.runtime.num_threads())
    queue.put(out)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_forked_workers_start_without_threads_and_own_their_pools(mlp_onnx):
    from bench.runner import backend_preloads

    # what a sweep over these backends asks the server to import (it starts once per process, with
    # what the first sweep asked for; an earlier test may have started it)
    assert "tvm.relax.frontend.onnx" in backend_preloads(["tvm", "onnxruntime"]) and backend_preloads(["onnxruntime"]) == []
    queue = multiprocessing.get_context("forkserver").SimpleQueue()
    p = _ServerProcess(target=_probe, args=(queue, str(mlp_onnx)))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    out = queue.get()
    # The server imported TVM and friends but holds no thread, so a fork copies no half-held lock.
    assert out["server_threads"] == 1 and out["threads_at_start"] == 1
    assert {"onnx", "bench.jobs"} <= set(out["preloaded"])
    # ONNX Runtime's intra-op pool (2 threads: the caller and one more) and TVM's are the cell's own.
    assert out["threads_after_ort"] >= 2 and out["tvm_threads"] == 2
