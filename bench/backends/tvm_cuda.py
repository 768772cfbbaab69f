"""Apache TVM on CUDA: Relax -> CUDA target with TVM's default GPU schedules (dlight), the kernels
compiled ahead of time to cubin with NVRTC, run with the Relax VM on the device.

Compiling needs no GPU: the PyPI wheel has CUDA code generation, and NVRTC comes from PyPI
(`pip install 'bench[cuda-compile]'`: cuda-bindings, NVRTC and the CUDA headers). The architecture
is the visible device's, or `backend_options.tvm_cuda.arch` (e.g. `sm_90`) to compile for a
device elsewhere; `bench run --compile-only` / `bench tune` then fill the cache, and cells that
need the device are `skipped` with the reason.

Why cubins are built here: TVM 0.27 stores CUDA *source* in the exported library and compiles it
when the library is loaded (its `tvm_callback_cuda_compile`), which would need NVRTC and the CUDA
headers on the machine that runs the model and would pay that compile at load. So each CUDA
module's source is compiled to a cubin for the target architecture at build time and kept beside
`lib.so` (`cubins/<sha256 of the source>.cubin`); at load, bench.bundle_runner.serve_cubins answers TVM's callback
from those files. A runtime-only TVM (see `bench bundle`) needs nothing else.

Timing: inputs are placed on the device once; the clock synchronizes the device before every
read (perf_counter_ns, int64 nanoseconds), so a sample spans exactly the kernels of one forward
pass. Outputs stay on the device inside the timed region; `run` copies them out for validation.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from bench.backends.base import Availability, CompileRequest, import_framework
from bench.gpu import arch_runs_on, parse_arch

from bench.backends.tvm import TvmBackend, TvmCompiled, TvmTunedBackend
from bench.options import BackendOptions, CudaOptions, CudaTunedOptions
from bench.bundle_runner import source_key

EM_CUDA = 190  # ELF e_machine of a cubin
HINT = "pip install 'bench[cuda-compile]' (cuda-bindings, NVRTC and the CUDA headers from PyPI)"


def cuda_root() -> Path | None:
    """The CUDA headers and NVRTC installed from PyPI (nvidia/cu13/{include,lib}), if present."""
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        root = Path(base) / "cu13"
        if (root / "include" / "cuda_runtime.h").is_file() and (root / "include" / "cccl").is_dir():
            return root
    return None


def nvrtc_version() -> str | None:
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        return None
    err, major, minor = nvrtc.nvrtcVersion()
    return f"{major}.{minor}" if int(err) == 0 else None


def cubin_arch(data: bytes) -> str | None:
    """`sm_XY` of a cubin (an ELF for EM_CUDA whose e_flags carry the SM version), else None."""
    if len(data) < 52 or data[:4] != b"\x7fELF" or struct.unpack_from("<H", data, 18)[0] != EM_CUDA:
        return None
    flags = struct.unpack_from("<I", data, 48)[0]
    return f"sm_{(flags >> 8) & 0xFF}"


def cuda_modules(module: Any) -> list[Any]:
    """Every CUDA module imported (at any depth) by a compiled TVM module."""
    found, stack = [], [module]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            found.append(m)
        stack.extend(m.imports)
    return found


def compile_cubins(executable: Any, target: Any, arch: str, out: Path) -> list[str]:
    """Compile each CUDA module's source to a cubin for `arch` with NVRTC; returns the keys."""
    import os

    from tvm.support import nvcc

    root = cuda_root()
    if root is None or nvrtc_version() is None:
        raise RuntimeError(f"NVRTC or the CUDA headers are missing; {HINT}")
    out.mkdir(parents=True, exist_ok=True)
    keys = []
    saved = os.environ.get("CUDA_PATH")
    os.environ["CUDA_PATH"] = str(root)  # the headers that match this NVRTC, not another toolkit's
    try:
        sources = [m.inspect_source("") for m in cuda_modules(executable.mod)]
        cubins = []
        for code in sources:
            with target:
                cubins.append(bytes(nvcc.compile_cuda(code, target_format="cubin", arch=arch, compiler="nvrtc",
                                                      options=[f"-I{root / 'include' / 'cccl'}"])))
    finally:
        if saved is None:
            os.environ.pop("CUDA_PATH", None)
        else:
            os.environ["CUDA_PATH"] = saved
    for code, cubin in zip(sources, cubins):
        if cubin_arch(cubin) != parse_arch(arch).base:  # the ELF flags carry the number; the a/f suffix is NVRTC's to honour
            raise RuntimeError(f"NVRTC returned no {arch} cubin (got {cubin_arch(cubin)})")
        key = source_key(code)
        (out / f"{key}.cubin").write_bytes(cubin)
        keys.append(key)
    return keys


def visible_arch() -> tuple[Any | None, str | None]:
    """(the CUDA device, its sm_XY) when one is visible to TVM, else (None, None)."""
    import tvm

    from bench.bundle_runner import load_cuda_runtime

    load_cuda_runtime(tvm)  # a runtime-only TVM does not load its CUDA library by itself
    try:
        dev = tvm.cuda(0)
        if not dev.exist:
            return None, None
        return dev, "sm_" + dev.compute_version.replace(".", "")
    except Exception:  # no driver, no runtime library: no device
        return None, None


def cuda_target(arch: str) -> Any:
    import tvm

    return tvm.target.Target({"kind": "cuda", "arch": arch, "max_num_threads": 1024, "thread_warp_size": 32,
                              "max_shared_memory_per_block": 49152, "host": {"kind": "llvm"}})


class TvmCudaBackend(TvmBackend):
    """backend_options.tvm_cuda: arch (sm_XY; default: the visible device's)."""

    Options: type[BackendOptions] = CudaOptions

    name = "tvm_cuda"
    variant = "dlight"  # TVM's default GPU schedules, no search
    cache_kind = "tvm-cuda-lib"

    def availability(self) -> Availability:
        base = super().availability()
        if not base.usable:
            return base
        tvm, _ = import_framework("tvm", "apache-tvm", HINT)
        if tvm.support.libinfo().get("USE_CUDA", "OFF") != "ON":
            return Availability(False, "this TVM build has no CUDA code generation")
        version = nvrtc_version()
        if version is None or cuda_root() is None:
            return Availability(False, f"NVRTC or the CUDA headers are not installed; {HINT}")
        return Availability(True, versions={**base.versions, "nvrtc": version})

    def _arch(self, request: CompileRequest) -> str:
        arch = request.options.get("arch")
        if arch:
            return str(arch)
        _, seen = visible_arch()
        if seen is None:
            from bench.backends.base import Unsupported

            raise Unsupported("no CUDA device is visible here; set backend_options.tvm_cuda.arch (e.g. sm_90) to compile for one elsewhere")
        return seen

    def _target(self, request: CompileRequest) -> Any:
        return cuda_target(self._arch(request))

    def _provider(self, target: Any) -> str:
        return f"cuda -arch={target.attrs['arch']} (NVRTC {nvrtc_version()}, cubin)"

    def _cache_key(self, request: CompileRequest, target: Any) -> dict[str, Any]:
        return {**super()._cache_key(request, target), "arch": str(target.attrs["arch"]), "nvrtc": nvrtc_version(),
                "pipeline": "default-cuda, tolerant dlight rules, v1"}

    def _pipeline(self, target: Any) -> tuple[Any, dict[str, Any]]:
        return cuda_pipeline(target)

    def _after_compile(self, executable: Any, target: Any, d: Path) -> dict[str, Any]:
        arch = str(target.attrs["arch"])
        keys = compile_cubins(executable, target, arch, d / "cubins")
        return {"arch": arch, "cuda_compiler": f"NVRTC {nvrtc_version()}", "cubins": len(keys)}

    def _load(self, entry: Path, info: dict[str, Any], request: CompileRequest) -> TvmCompiled:
        dev, seen = visible_arch()
        facts: dict[str, Any] = {"device": "cuda", "threads": request.threads}  # host threads of the VM
        if dev is None:
            return _NotHere(facts, info["outputs"], f"compiled for {info['arch']} and cached; no CUDA device is visible here to run it")
        if not arch_runs_on(info["arch"], seen):
            return _NotHere(facts, info["outputs"], f"compiled for {info['arch']}, the visible device is {seen}")
        import tvm
        from tvm import relax

        from bench.bundle_runner import serve_cubins

        serve_cubins(entry / "cubins")
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(entry / "lib.so")), dev)
        facts.update(device_name=dev.device_name, driver=str(dev.driver_version))
        compiled = TvmCompiled(vm, facts, info["outputs"], device=dev)
        compiled.clock = synced_clock(dev.sync)
        compiled.timed_region = TvmCompiled.timed_region + "; the device synchronized before each clock read"
        return compiled


class TvmCudaTunedBackend(TvmCudaBackend, TvmTunedBackend):
    """MetaSchedule for CUDA with tvm_tuned's budget, database and coverage rules
    (backend_options.tvm_cuda_tuned: arch, trials, min_trials_per_task, trials_per_iter, ...).
    Every candidate is measured on the device, so tuning needs the device of the target's
    architecture; with the budget already in the cache's database (tuned on such a machine, the
    cache directory shared), a machine without it builds the library (`--compile-only`). Functions
    the database has no schedule for get dlight's, as in `tvm_cuda`, and the variant says how many
    tasks are tuned."""

    Options = CudaTunedOptions
    name = "tvm_cuda_tuned"
    variant = "tuned"
    cache_kind = "tvm-cuda-lib"

    def _cannot_tune_here(self, target: Any) -> str | None:
        arch = str(target.attrs["arch"])
        _, seen = visible_arch()
        if seen is not None and arch_runs_on(arch, seen):
            return None
        here = f"the visible device is {seen}" if seen else "no CUDA device is visible here"
        return (f"MetaSchedule measures every candidate on a {arch} device and {here}; tune on a machine with one "
                "(bench tune, same BENCH_CACHE_DIR) and this machine builds from its database")


def cuda_pipeline(target: Any) -> tuple[Any, dict[str, Any]]:
    """TVM's default CUDA pipeline, except that a dlight rule that raises on a function (dlight's
    Matmul rule asserts on some fused epilogues, e.g. MobileNetV2's classifier) is passed over so
    that the next rule, at worst dlight's Fallback, schedules it. The facts count the functions
    that fell through and name the first (`dlight_fallbacks`), so the row says so."""
    import tvm
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    fell: list[str] = []
    facts: dict[str, Any] = {}

    class Tolerant(dl.ScheduleRule):
        def __init__(self, rule: Any):
            self.rule = rule

        def apply(self, func: Any, target: Any, tunable: bool) -> Any:
            try:
                return self.rule.apply(func, target, tunable)
            except Exception:
                name = func.attrs["global_symbol"] if func.attrs and "global_symbol" in func.attrs else "?"
                fell.append(f"{type(self.rule).__name__} on {name}")
                return None

    legalize = [p for p in cuda.legalize_passes(target) if not isinstance(p, dl.ApplyDefaultSchedule)]
    rules = [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction()]

    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            mod = tvm.transform.Sequential(
                cuda.library_dispatch_passes(target) + legalize
                + [dl.ApplyDefaultSchedule(*[Tolerant(r) for r in rules], dl.gpu.Fallback())]
                + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))(mod)
        facts["dlight_fallbacks"] = f"{len(fell)}: {fell[0]}" + (" ..." if len(fell) > 1 else "") if fell else "0"
        return mod

    return pipeline, facts


def synced_clock(sync: Callable[[], Any]) -> Callable[[], int]:
    """A nanosecond clock that first waits for the device: a sample then spans the kernels launched
    between two reads and nothing else."""
    def clock() -> int:
        sync()
        return time.perf_counter_ns()

    clock.timer = "device_synchronized_perf_counter_ns"  # type: ignore[attr-defined]
    return clock


class _NotHere(TvmCompiled):
    """A library compiled for a device this machine lacks: its facts are real, it cannot run."""

    def __init__(self, facts: Mapping[str, Any], outputs: list[str], why: str):
        self.facts = dict(facts)
        self._outputs = outputs
        self.cannot_run = why
        self.vm = self._main = self._device = None

    def run(self, feeds: Any) -> Any:
        raise RuntimeError(self.cannot_run)

    def prepare(self, feeds: Any) -> Any:
        raise RuntimeError(self.cannot_run)


def describe_library(entry: Path) -> dict[str, Any]:
    """What a cached tvm_cuda entry holds: architecture per cubin (for tests and `bench bundle`)."""
    info = json.loads((entry / "info.json").read_text())
    return {"arch": info.get("arch"), "cubins": {p.name: cubin_arch(p.read_bytes()) for p in sorted((entry / "cubins").glob("*.cubin"))}}
