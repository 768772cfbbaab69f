#!/usr/bin/env python3
"""trtexec as a contract stand-in (tests only): loads a stand-in engine plan and times it.

Written from trtexec's sources (NVIDIA/TensorRT samples/common/sampleOptions.cpp, v10.16 and v11.1)
and the 10.x -> 11.x trtexec migration page: flags are refused unless that version has them
(11.x dropped --fp16/--int8/--best/--calib..., made --noDataTransfers, --useCudaGraph and
--useSpinWait no-ops, and added --noCudaGraph, --includeDataTransfers, --noSpinWait; 10.x has
none of the 11.x additions). --exportTimes writes sampleReporting.cpp's exportJSONTrace format: a
JSON array, one object per timed iteration (warm-up excluded) with startEnqMs, endEnqMs,
startH2dMs, endH2dMs, startComputeMs, endComputeMs, startD2hMs, endD2hMs, h2dMs, computeMs,
d2hMs, latencyMs. The stand-in's compute is the plan's ONNX graph on ONNX Runtime's CPU provider.
"""
import json
import sys
import time

COMMON = {"--loadEngine", "--shapes", "--iterations", "--warmUp", "--duration", "--exportTimes", "--avgRuns", "--verbose"}
V10 = COMMON | {"--noDataTransfers", "--useCudaGraph", "--useSpinWait", "--fp16", "--int8", "--best"}
V11 = COMMON | {"--noDataTransfers", "--useCudaGraph", "--useSpinWait", "--noCudaGraph", "--includeDataTransfers", "--noSpinWait"}
MAGIC = b"STANDIN-TRT-PLAN\0"


def main(argv):
    args = dict((a.split("=", 1) + [""])[:2] for a in argv)
    plan = open(args["--loadEngine"], "rb").read()
    if not plan.startswith(MAGIC):
        print("[E] Error opening engine file: not a serialized engine", file=sys.stderr)
        return 1
    head, _, onnx_bytes = plan[len(MAGIC):].partition(b"\0")
    header = json.loads(head)
    known = V11 if header["version"].startswith("11.") else V10
    for flag in args:
        if flag not in known:
            print(f"[E] Unknown option: {flag}", file=sys.stderr)
            return 1
    import numpy as np
    import onnxruntime as ort

    shapes = {}
    for spec in filter(None, args.get("--shapes", "").split(",")):
        name, _, dims = spec.rpartition(":")
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    feeds = {i.name: np.zeros(shapes[i.name], types.get(i.type, np.float32)) for i in session.get_inputs()}
    end_warm = time.perf_counter() + float(args.get("--warmUp", 200)) / 1e3
    while time.perf_counter() < end_warm:
        session.run(None, feeds)
    base = time.perf_counter()
    trace = []
    for _ in range(int(args.get("--iterations", 10))):
        t0 = (time.perf_counter() - base) * 1e3
        session.run(None, feeds)
        t1 = (time.perf_counter() - base) * 1e3
        trace.append({"startEnqMs": t0, "endEnqMs": t0, "startH2dMs": t0, "endH2dMs": t0, "startComputeMs": t0,
                      "endComputeMs": t1, "startD2hMs": t1, "endD2hMs": t1, "h2dMs": 0.0, "computeMs": t1 - t0, "d2hMs": 0.0,
                      "latencyMs": t1 - t0})
    if "--exportTimes" in args:
        with open(args["--exportTimes"], "w") as f:
            f.write("[\n" + ",\n".join(json.dumps(r, separators=(", ", " : ")) for r in trace) + "\n]\n")
    print(f"&&&& PASSED TensorRT.trtexec [TensorRT v{header['version']}] (stand-in)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
