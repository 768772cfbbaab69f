"""A stand-in for the CUDA runtime library (libcudart) as Polygraphy's ctypes wrapper and bench
call it, on a machine without a GPU: "device" memory is host memory, a stream runs its work at
once, events read the host clock.

Written from NVIDIA's CUDA Runtime API reference (docs.nvidia.com/cuda/cuda-runtime-api/):
cudaMalloc/cudaFree (group__CUDART__MEMORY), cudaMemcpy/cudaMemcpyAsync with cudaMemcpyKind 0-4,
cudaStreamCreate/Synchronize/Destroy (group__CUDART__STREAM), cudaEventCreate/Record/Synchronize/
ElapsedTime/Destroy (group__CUDART__EVENT; elapsed time is a float of milliseconds),
cudaGetDeviceCount, cudaGetDeviceProperties (cudaDeviceProp.name: char[256], the first field),
cudaDeviceGetAttribute (cudaDevAttrComputeCapabilityMajor = 75, Minor = 76), cudaDriverGetVersion
and cudaRuntimeGetVersion (1000 * major + 10 * minor), cudaGetErrorString. Status codes: 0 success,
1 cudaErrorInvalidValue, 400 cudaErrorInvalidResourceHandle. Copies into or out of memory this
runtime did not allocate, and handles it did not create, are refused with those codes.
"""

from __future__ import annotations

import ctypes
import time

from tests.standins import record, simulated_gpu

SUCCESS, INVALID_VALUE, INVALID_HANDLE = 0, 1, 400
HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2


def _value(x) -> int:
    return int(x.value if hasattr(x, "value") and x.value is not None else (x or 0))


class FakeCudaRuntime:
    def __init__(self):
        self.allocations: dict[int, ctypes.Array] = {}
        self.streams: set[int] = set()
        self.events: dict[int, int | None] = {}
        self._next = 1

    def _handle(self) -> int:
        self._next += 1
        return 0x1000 + self._next

    def _device_span(self, ptr: int, n: int) -> bool:
        return any(base <= ptr and ptr + n <= base + len(buf) for base, buf in self.allocations.items())

    # memory
    def cudaMalloc(self, ref, nbytes) -> int:
        buf = ctypes.create_string_buffer(max(_value(nbytes), 1))
        addr = ctypes.addressof(buf)
        self.allocations[addr] = buf
        ref._obj.value = addr
        return SUCCESS

    def cudaFree(self, ptr) -> int:
        if _value(ptr) == 0:
            return SUCCESS  # cudaFree(NULL) is a no-op
        return SUCCESS if self.allocations.pop(_value(ptr), None) is not None else INVALID_VALUE

    def cudaMemcpy(self, dst, src, nbytes, kind) -> int:
        d, s, n, k = _value(dst), _value(src), _value(nbytes), _value(kind)
        if k == HOST_TO_DEVICE and not self._device_span(d, n) or k == DEVICE_TO_HOST and not self._device_span(s, n):
            record("cuda", "cudaMemcpy refused", kind=k, nbytes=n)
            return INVALID_VALUE
        ctypes.memmove(d, s, n)
        return SUCCESS

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream) -> int:
        if _value(stream) not in self.streams:
            return INVALID_HANDLE
        return self.cudaMemcpy(dst, src, nbytes, kind)

    # streams
    def cudaStreamCreate(self, ref) -> int:
        h = self._handle()
        self.streams.add(h)
        ref._obj.value = h
        return SUCCESS

    def cudaStreamSynchronize(self, stream) -> int:
        return SUCCESS if _value(stream) in self.streams else INVALID_HANDLE

    def cudaStreamDestroy(self, stream) -> int:
        h = _value(stream)
        if h not in self.streams:
            return INVALID_HANDLE
        self.streams.discard(h)
        return SUCCESS

    # events
    def cudaEventCreate(self, ref) -> int:
        h = self._handle()
        self.events[h] = None
        ref._obj.value = h
        return SUCCESS

    def cudaEventRecord(self, event, stream) -> int:
        h, s = _value(event), _value(stream)
        if h not in self.events or (s and s not in self.streams):
            return INVALID_HANDLE
        self.events[h] = time.perf_counter_ns()
        return SUCCESS

    def cudaEventSynchronize(self, event) -> int:
        return SUCCESS if _value(event) in self.events else INVALID_HANDLE

    def cudaEventElapsedTime(self, ref, start, end) -> int:
        a, b = self.events.get(_value(start)), self.events.get(_value(end))
        if a is None or b is None:
            return INVALID_HANDLE  # cudaErrorInvalidResourceHandle: an event never recorded
        ref._obj.value = ctypes.c_float((b - a) / 1e6).value
        return SUCCESS

    def cudaEventDestroy(self, event) -> int:
        if _value(event) not in self.events:
            return INVALID_HANDLE
        del self.events[_value(event)]
        return SUCCESS

    # the device
    def cudaGetDeviceCount(self, ref) -> int:
        ref._obj.value = 1
        return SUCCESS

    def cudaGetDeviceProperties_v2(self, buf, device) -> int:
        if _value(device) != 0:
            return INVALID_VALUE
        name = simulated_gpu()[0].encode()[:255]
        ctypes.memmove(buf, name + b"\0", len(name) + 1)
        return SUCCESS

    def cudaDeviceGetAttribute(self, ref, attr, device) -> int:
        _, major, minor = simulated_gpu()
        values = {75: major, 76: minor}
        if _value(attr) not in values or _value(device) != 0:
            return INVALID_VALUE
        ref._obj.value = values[_value(attr)]
        return SUCCESS

    def cudaDriverGetVersion(self, ref) -> int:
        ref._obj.value = 13000
        return SUCCESS

    def cudaRuntimeGetVersion(self, ref) -> int:
        ref._obj.value = 13000
        return SUCCESS

    def cudaGetErrorString(self, status):
        return {INVALID_VALUE: b"invalid argument", INVALID_HANDLE: b"invalid resource handle"}.get(_value(status), b"unknown error")


def install() -> FakeCudaRuntime:
    """Put the stand-in behind Polygraphy's CUDA wrapper (polygraphy.cuda.wrapper().handle)."""
    from polygraphy.cuda import cuda

    if cuda.G_CUDA is not None and isinstance(cuda.G_CUDA.handle, FakeCudaRuntime):
        return cuda.G_CUDA.handle
    wrapper = cuda.Cuda.__new__(cuda.Cuda)
    wrapper.handle = FakeCudaRuntime()
    cuda.G_CUDA = wrapper
    return wrapper.handle
