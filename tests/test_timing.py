"""The timed loop and statistics, exactly, with a fake clock."""

import numpy as np
import pytest

from bench.config import TimingConfig
from bench.timing import measure, summarize


class FakeClock:
    """Advances `step` ns per reading, and `work` ns per forward call."""

    def __init__(self, step=0, work=1_000_000):
        self.now, self.step, self.work = 0, step, work
        self.calls = 0

    def __call__(self):
        self.now += self.step
        return self.now

    def forward(self):
        self.calls += 1
        self.now += self.work


def test_warmup_is_not_sampled_and_min_iterations_bound_applies():
    clock = FakeClock(work=2_000_000)  # 2 ms a call
    samples = measure(clock.forward, clock, TimingConfig(warmup=3, min_iterations=5, min_time_s=0.0))
    assert samples == [2_000_000] * 5
    assert clock.calls == 3 + 5


def test_min_time_extends_beyond_min_iterations():
    clock = FakeClock(work=1_000_000)  # 1 ms a call, 0.0105 s needed -> 11 calls
    samples = measure(clock.forward, clock, TimingConfig(warmup=0, min_iterations=2, min_time_s=0.0105))
    assert len(samples) == 11


def test_max_iterations_caps_the_loop():
    clock = FakeClock(work=1)
    samples = measure(clock.forward, clock, TimingConfig(warmup=0, min_iterations=1, min_time_s=100.0, max_iterations=7))
    assert len(samples) == 7


def test_only_the_forward_call_is_timed():
    # Each clock reading itself costs 5 ns: a sample spans one forward call plus one reading.
    clock = FakeClock(step=5, work=1000)
    samples = measure(clock.forward, clock, TimingConfig(warmup=0, min_iterations=4, min_time_s=0.0))
    assert samples == [1005] * 4


def test_summarize_exact_values():
    ns = [1_000_000 * v for v in (1, 2, 3, 4, 10)]
    s = summarize(ns, batch_size=4)
    assert s.iterations == 5
    assert s.mean_ms == pytest.approx(4.0)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert (s.min_ms, s.max_ms, s.p50_ms) == (1.0, 10.0, 3.0)
    assert s.p90_ms == pytest.approx(7.6)  # linear interpolation between 4 and 10
    assert s.p99_ms == pytest.approx(9.76)
    assert s.cv == pytest.approx(s.std_ms / 4.0)
    assert s.throughput_ips == pytest.approx(4 / 0.004)


def test_summarize_single_sample_and_empty():
    s = summarize([2_000_000], batch_size=1)
    assert s.std_ms == 0.0 and s.cv == 0.0 and s.p99_ms == 2.0
    with pytest.raises(ValueError):
        summarize([], 1)


def test_one_hiccup_among_many_calls_is_not_unstable():
    steady = [1_000_000 + (i % 7) * 1000 for i in range(2000)]
    steady[500] = 5_000_000  # one scheduler hiccup: max 400% above the median
    s = summarize([steady, steady, steady], batch_size=1)
    assert not s.unstable and s.unstable_reason == "" and s.max_ms == 5.0
    assert s.repeats == 3 and s.dispersion < 0.01 and s.ci_method.startswith("hierarchical bootstrap over 3 processes, standard error with Student's t (2 df)")


def test_processes_that_disagree_or_jitter_are_unstable():
    a = [1_000_000] * 200
    b = [1_200_000] * 200
    s = summarize([a, b, a], batch_size=1)
    assert s.unstable and "medians of 3 processes differ by 20%" in s.unstable_reason
    assert s.repeat_p50_spread == pytest.approx(0.2)
    jitter = [1_000_000, 1_300_000] * 100  # IQR 30% of the median within one process
    s = summarize([jitter], batch_size=1)
    assert s.unstable and "IQR is" in s.unstable_reason and s.repeats == 1


def test_the_interval_widens_with_disagreeing_processes():
    rng = np.random.default_rng(0)
    tight = [list(1_000_000 + rng.integers(0, 10_000, 300)) for _ in range(3)]
    apart = [list(lv + rng.integers(0, 10_000, 300)) for lv in (950_000, 1_000_000, 1_050_000)]
    t, w = summarize(tight, 1), summarize(apart, 1)
    assert (w.p50_ci_high_ms - w.p50_ci_low_ms) > 5 * (t.p50_ci_high_ms - t.p50_ci_low_ms)
    assert t.p50_ci_low_ms <= t.p50_ms <= t.p50_ci_high_ms
    assert summarize(tight, 1) == t  # seeded: the same samples give the same interval


def test_the_garbage_collector_is_off_inside_the_timed_loop():
    import gc

    seen = []
    clock = FakeClock(work=10)
    samples = measure(lambda: seen.append(gc.isenabled()) or clock.forward(), clock,
                      TimingConfig(warmup=1, min_iterations=3, min_time_s=0.0))
    assert len(samples) == 3 and seen == [False] * 4 and gc.isenabled()


def test_few_processes_widen_the_interval_as_a_t_interval_would():
    from bench.timing import t975, t_interval

    boot = np.array([-0.1, 0.0, 0.1, 0.0])
    se = float(np.std(boot, ddof=1))
    lo, hi = t_interval(0.5, boot, groups=3, df=2)
    assert (lo, hi) == pytest.approx((0.5 - 4.303 * se * 1.5 ** 0.5, 0.5 + 4.303 * se * 1.5 ** 0.5))
    assert t975(2) > t975(9) > t975(100) == 1.96
    assert t_interval(0.5, boot, groups=1, df=1) == pytest.approx((0.5 - 1.96 * se, 0.5 + 1.96 * se))


class WarmingClock(FakeClock):
    """A forward call costs `slow` ns for the first `cold` calls, then `work` ns."""

    def __init__(self, cold, slow=1_500_000, work=1_000_000):
        super().__init__(work=work)
        self.cold, self.slow = cold, slow

    def forward(self):
        self.calls += 1
        self.now += self.slow if self.calls <= self.cold else self.work


def test_warm_up_that_is_not_over_is_extended_and_said():
    from bench.timing import measure_steady

    clock = WarmingClock(cold=30)  # warm-up of 5 calls, 100 timed: the first 25 timed calls are 50% slower
    samples, note = measure_steady(clock.forward, clock, TimingConfig(warmup=5, min_iterations=100, min_time_s=0.0,
                                                                      max_iterations=100))
    assert samples == [1_000_000] * 100  # the slow calls were discarded with the first loop
    assert note == "steady after warm-up extended by 100 calls"


def test_warm_up_never_over_and_slowing_calls_are_flagged():
    from bench.timing import measure_steady

    clock = WarmingClock(cold=10_000)  # every call cold: no trend, steady
    assert measure_steady(clock.forward, clock, TimingConfig(warmup=0, min_iterations=80, min_time_s=0.0, max_iterations=80))[1] == "steady"
    clock = WarmingClock(cold=300)  # warm from the last quarter on: the calls still get faster at the end
    samples, note = measure_steady(clock.forward, clock, TimingConfig(warmup=0, min_iterations=400, min_time_s=0.0,
                                                                      max_iterations=400, max_warmup_extensions=1))
    assert note == "steady after warm-up extended by 400 calls" and samples == [1_000_000] * 400
    clock = RampClock(ramp=800)  # a warm-up longer than both loops
    samples, note = measure_steady(clock.forward, clock, TimingConfig(warmup=0, min_iterations=400, min_time_s=0.0,
                                                                      max_iterations=400, max_warmup_extensions=1))
    assert note.startswith("warming: first quarter of calls +") and note.endswith("still after warm-up extended by 400 calls")


class RampClock(FakeClock):
    """Forward calls 50% slower at first, getting faster linearly until call `ramp`."""

    def __init__(self, ramp, work=1_000_000):
        super().__init__(work=work)
        self.ramp = ramp

    def forward(self):
        self.calls += 1
        self.now += int(self.work * (1 + 0.5 * max(0.0, 1 - self.calls / self.ramp)))


def test_calls_that_slow_down_are_a_trend_and_make_the_row_unstable():
    from bench.scenarios.single_stream import steady_state
    from bench.timing import trend

    ms = 1_000_000
    assert trend([ms] * 75 + [int(1.2 * ms)] * 25)[0] == "slowing"
    assert trend([ms] * 99 + [50 * ms])[0] == "steady"  # one hiccup is no trend
    assert trend([ms] * 30)[0] == "unchecked"
    rng = np.random.default_rng(0)
    noisy = (ms * rng.lognormal(0, 0.1, 1000)).astype(int).tolist()  # 10% noise, no order
    assert trend(noisy)[0] == "steady"
    out = steady_state([{"steady_state": "steady"}, {"steady_state": trend([ms] * 75 + [int(1.2 * ms)] * 25)[1]}],
                       {"unstable_reason": ""})
    assert out["unstable"] and out["unstable_reason"] == "trend within a process (process 2 slowing)"
    assert out["steady_state"].startswith("process 2: slowing: last quarter of calls +20%")
    assert steady_state([{"steady_state": "steady"}] * 3, {}) == {"steady_state": "steady"}


def test_a_trend_found_after_a_warm_up_extension_is_still_a_trend():
    from bench.scenarios.single_stream import steady_state
    from bench.timing import measure_steady

    class Clock(FakeClock):
        def forward(self):
            self.calls += 1
            self.now += 1_500_000 if self.calls <= 25 else (1_300_000 if self.calls > 175 else 1_000_000)

    clock = Clock()
    _, note = measure_steady(clock.forward, clock, TimingConfig(warmup=0, min_iterations=100, min_time_s=0.0, max_iterations=100))
    assert note.startswith("slowing: last quarter of calls +30%") and note.endswith("after warm-up extended by 100 calls")
    assert steady_state([{"steady_state": note}], {})["unstable"]
