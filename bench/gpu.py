"""The GPU a cell runs on, named well enough to key artifacts that only run there.

TensorRT engines do not move across GPU architectures, and an engine built on one GPU of an
architecture carries tactics timed on that GPU (TensorRT's support matrix, "engine portability").
So every GPU cache key and every GPU row carries `identity()`: the device's name, its compute
capability, the driver's and the CUDA runtime's versions.

The CUDA runtime is reached through Polygraphy's wrapper (`polygraphy.cuda.wrapper().handle`, a
ctypes handle on libcudart). Polygraphy looks for a pip-installed runtime only under
`nvidia/cuda_runtime/lib` (the CUDA 12 wheels' layout); the CUDA 13 wheels install under
`nvidia/cu13/lib`, so `runtime_handle` tries those too when Polygraphy's own search finds no
runtime that sees a device: a pip-only host finds its runtime.

Architectures are written `sm_XY` with an optional suffix: `a` (arch-specific features, such as
Hopper's wgmma: the code runs only on that exact compute capability) or `f` (family-specific: runs
on later minors of the same major). `parse_arch` and `arch_runs_on` read them; nothing here drops
the suffix silently.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCH_PATTERN = r"^sm_[0-9]{2,3}[af]?$"
# cudaDeviceAttr (CUDA runtime API, driver_types.h)
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76
_PROP_BYTES = 8192  # larger than any cudaDeviceProp so far (about 1 KiB); `name` is its first field


@dataclass(frozen=True)
class Arch:
    number: int  # 90 for sm_90a
    suffix: str  # "", "a" or "f"

    @property
    def base(self) -> str:
        return f"sm_{self.number}"

    def __str__(self) -> str:
        return f"sm_{self.number}{self.suffix}"


def parse_arch(text: str) -> Arch:
    m = re.match(r"^sm_([0-9]{2,3})([af]?)$", str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a CUDA architecture; write sm_XY, sm_XYa or sm_XYf (e.g. sm_90, sm_90a, sm_100f)")
    return Arch(int(m.group(1)), m.group(2))


def arch_runs_on(arch: str, device: str) -> bool:
    """Whether code compiled for `arch` runs on a device of compute capability `device` (sm_XY).
    Plain and `a` code: that exact compute capability (what this suite compiles is a cubin, not
    PTX). `f` code: the same major, this minor or a later one."""
    a, d = parse_arch(arch), parse_arch(device)
    if a.suffix == "f":
        return a.number // 10 == d.number // 10 and d.number >= a.number
    return a.number == d.number


def pip_cuda_lib_dirs() -> list[Path]:
    """lib folders of the CUDA runtime wheels from PyPI: nvidia/cuda_runtime/lib (CUDA 12) and
    nvidia/cu13/lib (CUDA 13), wherever the `nvidia` namespace package lies."""
    spec = importlib.util.find_spec("nvidia")
    found = []
    for base in (spec.submodule_search_locations or []) if spec else []:
        for sub in ("cuda_runtime/lib", "cu13/lib"):
            d = Path(base) / sub
            if any(d.glob("libcudart.so*")):
                found.append(d)
    return found


def device_count(handle: Any) -> tuple[int, int]:
    """(cudaGetDeviceCount's status, the devices it counted) through a CUDA runtime handle."""
    count = ctypes.c_int(0)
    status = handle.cudaGetDeviceCount(ctypes.byref(count))
    return int(status), count.value


def _sees_a_device(handle: Any) -> bool:
    try:
        status, count = device_count(handle)
    except (AttributeError, OSError):
        return False
    return status == 0 and count > 0


def runtime_handle() -> Any:
    """Polygraphy's ctypes handle on the CUDA runtime. Polygraphy's own search comes first (the
    toolkit, LD_LIBRARY_PATH, the CUDA 12 wheel); where it finds no runtime, or one that sees no
    device (a CUDA 13 runtime under an older driver, say), each pip runtime is tried in turn and
    the first that sees a device is kept; with none, the first that loads, so that the reason
    given is the device, not the library."""
    from polygraphy.cuda import cuda

    if cuda.G_CUDA is not None:
        return cuda.G_CUDA.handle
    try:
        default = cuda.wrapper().handle
    except OSError:  # no libcudart where Polygraphy looks
        default = None
    if default is not None and _sees_a_device(default):
        return default
    loaded = []
    for d in pip_cuda_lib_dirs():
        for lib in sorted(d.glob("libcudart.so*")):
            try:
                handle = ctypes.CDLL(str(lib))
            except OSError:
                continue
            if _sees_a_device(handle):
                return _keep(cuda, handle)
            loaded.append(handle)
            break  # one runtime per folder
    if default is not None or loaded:
        return _keep(cuda, default if default is not None else loaded[0])
    raise OSError("no CUDA runtime library (libcudart) found: not on LD_LIBRARY_PATH, not in a CUDA toolkit, "
                  "not from the nvidia-cuda-runtime wheels")


def _keep(cuda: Any, handle: Any) -> Any:
    """Make `handle` the one Polygraphy's wrapper uses (its DeviceArray, Stream) from now on."""
    wrapper = cuda.Cuda.__new__(cuda.Cuda)
    wrapper.handle = handle
    cuda.G_CUDA = wrapper
    return handle


def _int(handle: Any, call: str, *args: Any) -> int:
    out = ctypes.c_int(0)
    status = getattr(handle, call)(ctypes.byref(out), *args)
    if status != 0:
        raise RuntimeError(f"{call} failed with CUDA error {status}")
    return out.value


def identity(device: int = 0) -> dict[str, str]:
    """{gpu, compute_capability (sm_XY), cuda_driver, cuda_runtime} of a device; raises when no
    CUDA device is usable. Versions read as CUDA encodes them (13000 -> 13.0)."""
    h = runtime_handle()
    status, count = device_count(h)
    if status != 0:
        raise RuntimeError(f"cudaGetDeviceCount failed with CUDA error {status}")
    if count <= device:
        raise RuntimeError(f"no CUDA device {device} ({count} visible)")
    props = ctypes.create_string_buffer(_PROP_BYTES)
    # CUDA 12 and 13 headers map the call to the _v2 symbol; older runtimes export only the first.
    get_props = getattr(h, "cudaGetDeviceProperties_v2", None) or h.cudaGetDeviceProperties
    status = get_props(props, ctypes.c_int(device))
    if status != 0:
        raise RuntimeError(f"cudaGetDeviceProperties failed with CUDA error {status}")
    name = props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")
    major = _int(h, "cudaDeviceGetAttribute", ctypes.c_int(ATTR_CC_MAJOR), ctypes.c_int(device))
    minor = _int(h, "cudaDeviceGetAttribute", ctypes.c_int(ATTR_CC_MINOR), ctypes.c_int(device))

    def version(v: int) -> str:
        return f"{v // 1000}.{(v % 1000) // 10}"

    return {"gpu": name, "compute_capability": f"sm_{major}{minor}",
            "cuda_driver": version(_int(h, "cudaDriverGetVersion")), "cuda_runtime": version(_int(h, "cudaRuntimeGetVersion"))}
