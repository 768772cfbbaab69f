"""A fake backend and a fake clock, for testing the harness itself (never a stand-in for a real backend)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from bench.backends.base import Availability, BackendBase, CompiledBase

WORK_NS = 1_000_000  # every fake forward call takes exactly 1 ms on the fake clock


class FakeClock:
    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now


JITTER = (0.0, 0.12, -0.08, 0.05, -0.11, 0.09, -0.03, 0.1)  # fake_jitter: each compile's (process's) slowdown, in turn
_compiles = [0]
SLOW = 0.10  # a model file whose name says "slow" runs 10% slower on every fake backend


class FakeCompiled(CompiledBase):
    def __init__(self, noise: float, interrupt: bool, slowdown: float = 0.0):
        self.clock = FakeClock()
        self.noise, self.interrupt, self.work = noise, interrupt, int(WORK_NS * (1 + slowdown))
        self.facts = {"variant": "fake", "provider": "numpy", "threads": 1, "backend_version": "0", "executes_as": "fp32"}
        self.timed_region = "a fake clock advanced by a fixed amount per call"
        self.released = False

    def run(self, feeds):
        x = next(iter(feeds.values()))
        y = np.tanh(x[:, :4].astype(np.float32)) + np.float32(self.noise)
        return {"y": y}

    def prepare(self, feeds):
        if self.interrupt:
            raise KeyboardInterrupt

        def forward():
            self.clock.now += self.work
        return forward

    def release(self):
        self.released = True


class FakeProfiledCompiled(FakeCompiled):
    """fake_profile_interrupt: Ctrl-C arrives while its per-layer profile runs."""

    def profile(self, feeds):
        raise KeyboardInterrupt


class FakeBackend(BackendBase):
    """Behaviour picked by name: fake (good), fake_drift, fake_broken (compile raises),
    fake_absent (unavailable), fake_interrupt (Ctrl-C while timing), fake_segfault and fake_killed
    (the worker dies by a signal while compiling), fake_hang (compile never returns), fake_jitter
    (each compiled instance, so each worker process, a few percent slower or faster: JITTER)."""

    variant = "fake"
    keeps_dynamic_batch = False
    precisions = ("fp32",)

    def __init__(self, name: str):
        self.name = name

    def availability(self):
        if self.name == "fake_absent":
            return Availability(False, "fake_absent is not installed here")
        return Availability(True, versions={"fake": "0"})

    def compile(self, request):
        if self.name == "fake_segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.name == "fake_killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.name == "fake_hang":
            once = os.environ.get("FAKE_HANG_ONCE")  # hang the first time only: a marker file says it did
            if not once or not Path(once).exists():
                if once:
                    Path(once).write_text(str(os.getpid()))
                time.sleep(3600)
        if self.name == "fake_broken":
            raise RuntimeError("unsupported operator FancyConv\nmore detail\nlast line of the compiler log")
        slowdown = SLOW if "slow" in Path(str(request.model.info.source)).name else 0.0
        if self.name == "fake_jitter":
            slowdown = JITTER[_compiles[0] % len(JITTER)]
            _compiles[0] += 1
        kind = FakeProfiledCompiled if self.name == "fake_profile_interrupt" else FakeCompiled
        return kind(noise=0.5 if self.name == "fake_drift" else 0.0, interrupt=self.name == "fake_interrupt", slowdown=slowdown)


NAMES = ("fake", "fake_jitter", "fake_drift", "fake_broken", "fake_absent", "fake_interrupt", "fake_segfault", "fake_killed", "fake_hang",
         "fake_profile_interrupt")


def register(backends: dict) -> None:
    """The BENCH_PLUGINS hook: worker processes import this module and call it."""
    for n in NAMES:
        backends[n] = lambda n=n: FakeBackend(n)
    if os.environ.get("FAKE_PAUSE_REPORT"):
        _pause_report_build(Path(os.environ["FAKE_PAUSE_REPORT"]))


def _pause_report_build(marker: Path) -> None:
    """Hold `bench report`'s build in its middle (plots written, report.md not yet) until killed,
    after creating `marker`: a test signals the CLI at that moment, not after a hopeful sleep."""
    from bench import report

    markdown = report._markdown

    def paused(*args, **kw):
        marker.write_text("building")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return markdown(*args, **kw)

    report._markdown = paused


def install(monkeypatch) -> None:
    """Register the fakes in this process and in every worker it starts."""
    from bench import backends

    for n in NAMES:
        monkeypatch.setitem(backends.BACKENDS, n, lambda n=n: FakeBackend(n))
    monkeypatch.setenv("BENCH_PLUGINS", __name__)
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
