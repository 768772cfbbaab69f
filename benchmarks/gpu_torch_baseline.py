"""A reference point for the GPU check: the same zoo architectures in PyTorch eager on the same GPU,
timed with CUDA events around each forward pass (inputs resident, after warm-up). Runs where torch
with CUDA is installed (the lent GPU machine has it; it has no TVM, which is why the TVM figures
come from the bundle). Prints one line per model, precision, batch size and mode: eager, and
`torch.compile` (Inductor, default mode) with `--compile`; TF32 is off (fp32 rows are fp32 math, as
bench's GPU backends).

    python -m benchmarks.gpu_torch_baseline [--min-time-s 1] [--compile]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

# bench.models.torch_zoo needs torch and numpy (and this repository on sys.path, as `python -m` from its root gives);
# load it without importing bench's other dependencies.
_spec = importlib.util.spec_from_file_location("torch_zoo", Path(__file__).resolve().parents[1] / "bench" / "models" / "torch_zoo.py")
torch_zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_zoo)  # type: ignore[union-attr]

CASES = [  # name, builder kwargs, input size, precisions, batches (as configs/gpu_check.yaml)
    ("resnet18-tiny", dict(block="basic", layers=(1, 1, 1, 1), width=8, num_classes=10), 32, ("fp32", "fp16"), (1, 8)),
    ("mobilenet_v2-tiny", dict(width_mult=0.25, num_classes=10), 32, ("fp32", "fp16"), (1, 8)),
    ("resnet18", dict(block="basic", layers=(2, 2, 2, 2)), 224, ("fp16",), (1,)),
]


def time_model(model, x, min_time_s: float) -> list[float]:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        for _ in range(10):
            model(x)
        torch.cuda.synchronize()
        samples, total = [], 0.0
        while total < min_time_s * 1e3 or len(samples) < 20:
            start.record()
            model(x)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
            total += samples[-1]
    return samples


def main() -> int:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--min-time-s", type=float, default=1.0)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (Inductor) of each model")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    for name, kw, size, precisions, batches in CASES:
        builder = torch_zoo.mobilenet_v2 if name.startswith("mobilenet") else torch_zoo.resnet
        torch.manual_seed(0)
        model = builder(**kw).eval().cuda()
        for precision in precisions:
            m = model.half() if precision == "fp16" else model.float()
            for b in batches:
                x = torch.randn(b, 3, size, size, device="cuda", dtype=torch.float16 if precision == "fp16" else torch.float32)
                modes = [("torch-eager", m)] + ([("torch-compile", torch.compile(m))] if args.compile else [])
                for mode, fn in modes:
                    ms = np.asarray(time_model(fn, x, args.min_time_s))
                    print(f"{name:<20} {mode:<13} {precision:<5} b{b:<3} p50 {np.median(ms):.4f} ms  "
                          f"p90 {np.percentile(ms, 90):.4f} ms  n={len(ms)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
