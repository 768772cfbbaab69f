"""BENCH_PLUGINS hook: TensorRT 10.x's API (tests.standins.tensorrt_api) on a stand-in CUDA device."""

VERSION = "10.13.3"


def register(backends: dict) -> None:
    from tests.standins.tensorrt_api import install

    install(VERSION)
