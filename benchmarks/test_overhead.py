"""pytest-benchmark: bench's timed loop against a bare session.run loop, same session, same inputs.

Run with `make benchmark`; compare the two medians (each round is CALLS forward calls).
"""

import pytest

from bench.config import TimingConfig
from bench.timing import measure
from benchmarks.common import CALLS, bare_loop, tiny_ort


@pytest.fixture(scope="module")
def ort_variant():
    compiled, feeds = tiny_ort()
    yield compiled, feeds
    compiled.release()


@pytest.mark.benchmark(group="harness-overhead")
def test_bare_session_run_loop(benchmark, ort_variant):
    compiled, feeds = ort_variant
    benchmark.pedantic(bare_loop, args=(compiled.session, feeds), rounds=30, warmup_rounds=3)


@pytest.mark.benchmark(group="harness-overhead")
def test_bench_timed_loop(benchmark, ort_variant):
    compiled, feeds = ort_variant
    fn = compiled.prepare(feeds)
    timing = TimingConfig(warmup=0, min_iterations=CALLS, min_time_s=0.0, max_iterations=CALLS)
    benchmark.pedantic(measure, args=(fn, compiled.clock, timing), rounds=30, warmup_rounds=3)
