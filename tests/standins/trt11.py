"""BENCH_PLUGINS hook: TensorRT 11.x's API (tests.standins.tensorrt_api) on a stand-in CUDA device."""

VERSION = "11.4.0"


def register(backends: dict) -> None:
    from tests.standins.tensorrt_api import install

    install(VERSION)
