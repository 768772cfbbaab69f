"""The `bench` command line: run, report, gate, compare, export, golden save, tune, bundle, inspect, cache, doctor.

Exit codes: 0 when the command did its job (a sweep that completed, whatever its cells' statuses),
1 for a failing verdict (gate: drift or missing cells; compare: regression or missing cells), 2 on
bad input (one line per problem, naming the file and key; a corrupt or partial run directory is bad
input), 3 for an internal error (a bug; never 1), 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.errors import BenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmark vision models across inference engines.")
err = Console(stderr=True)
# Off a terminal (CI logs, pipes) rich would wrap the table at 80 columns; keep rows whole there.
out = Console(width=None if sys.stdout.isatty() else 160)


def _fail(e: BenchError) -> None:
    for line in str(e).splitlines():
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class _RichReporter:
    """A progress bar over cells naming the current cell and its phase."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task: Any = None
        self.run_id: str | None = None

    def start(self, total: int, run_id: str) -> None:
        self.run_id = run_id
        self.progress.start()
        self.task = self.progress.add_task(f"run {run_id}", total=total)

    def cell(self, index: int, cell) -> None:
        self.progress.update(self.task, description=f"{cell.label}: starting")

    def phase(self, cell, phase: str) -> None:
        self.progress.update(self.task, description=f"{cell.label}: {phase}")

    def done(self, row: dict) -> None:
        self.progress.advance(self.task)
        if row["status"] != "ok":
            self.progress.console.print(f"  {row['model']} {row['backend']} {row['precision']} b{row['batch_size']}: "
                                        f"[yellow]{row['status']}[/]: {escape(str(row['error']))}", highlight=False)

    def warn(self, message: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

    def stop(self) -> None:
        self.progress.update(self.task, description="done")
        self.progress.stop()


class _PlainReporter:
    """Off a terminal (CI logs, pipes): one line per finished cell (status, p50, elapsed, ETA), each
    new phase, and the current phase again at least once a minute (tuning says trials done of the
    budget and the best latency so far)."""

    HEARTBEAT_S = 60.0

    def __init__(self, stream: Any = None):
        import time

        self.stream = stream or sys.stderr
        self.clock = time.monotonic
        self.run_id: str | None = None
        self.total = self.finished = 0
        self.t0 = self.cell_t0 = self.last_print = 0.0
        self.last_phase = ""
        self.progress = self  # the CLI stops `progress` on the way out

    def _print(self, line: str) -> None:
        self.last_print = self.clock()
        print(line, file=self.stream, flush=True)

    def _clock_text(self, seconds: float) -> str:
        m, s = divmod(int(seconds), 60)
        return f"{m // 60}:{m % 60:02d}:{s:02d}"

    def start(self, total: int, run_id: str) -> None:
        self.run_id, self.total, self.t0 = run_id, total, self.clock()
        self._print(f"run {run_id}: {total} cells")

    def cell(self, index: int, cell) -> None:
        self.cell_t0, self.last_phase = self.clock(), ""
        self.label = cell.label

    def phase(self, cell, phase: str) -> None:
        now = self.clock()
        if phase != self.last_phase or now - self.last_print >= self.HEARTBEAT_S:
            self.last_phase = phase
            self._print(f"  {cell.label}: {phase} ({self._clock_text(now - self.cell_t0)} in this cell)")

    def done(self, row: dict) -> None:
        self.finished += 1
        now = self.clock()
        elapsed = now - self.t0
        eta = elapsed / self.finished * (self.total - self.finished)
        from bench.report import label

        p50, qps = row.get("p50_ms"), row.get("achieved_qps")
        figure = f"p50 {p50:.4g} ms" if isinstance(p50, (int, float)) and p50 == p50 else "–"
        if isinstance(qps, (int, float)):
            figure = f"{qps:.4g} samples/s, {figure}, LoadGen {'VALID' if row.get('loadgen_valid') else 'INVALID'}"
        status = row["status"] + ("" if row["status"] == "ok" else f" ({str(row.get('error'))[:160]})")
        self._print(f"[{self.finished}/{self.total}] {label(row)}: "
                    f"{status}, {figure}, cell {self._clock_text(now - self.cell_t0)}, elapsed {self._clock_text(elapsed)}, "
                    f"ETA {self._clock_text(eta)}")

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}")

    def stop(self) -> None:
        if self.run_id is not None:
            self._print(f"run {self.run_id}: {self.finished} of {self.total} cells in {self._clock_text(self.clock() - self.t0)}")


def _reporter():
    """A progress bar on a terminal; plain lines anywhere else."""
    return _RichReporter(err) if err.is_terminal else _PlainReporter()


def _writable_dir(path: Path, option: str) -> None:
    """Before anything runs: `path` is (or can be made) a directory this process may write."""
    import os

    if path.exists() and not path.is_dir():
        raise BenchError(f"{option} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"{option} {path}: cannot be created ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {path}: not writable by this user")


def _print_summary(cells) -> None:
    from bench.report import LOAD_HEADER, SUMMARY_HEADER, load_table, summary_table

    style = {"ok": "green", "DRIFTED": "bold red", "not validated": "yellow", "stable": "green", "UNSTABLE": "yellow",
             "VALID": "green", "INVALID": "bold red"}
    numeric = ("batch", "p50 ms", "p50 95% CI", "mean ± std ms", "items/s", "GFLOP/s", "% peak", "max abs err", "target qps",
               "achieved qps", "p99 ms", "bound ms")
    for header, rows, title in ((SUMMARY_HEADER, summary_table(cells), "single stream"),
                                (LOAD_HEADER, load_table(cells), "under load (MLPerf LoadGen)")):
        if not rows:
            continue
        table = Table(show_lines=False, header_style="bold", title=title)
        for h in header:
            table.add_column(h, justify="right" if h in numeric else "left")
        for row in rows:
            row = [escape(c) for c in row]
            for i in (-1, -2) + ((-3,) if header is LOAD_HEADER else ()):
                row[i] = f"[{style.get(row[i], 'white')}]{row[i]}[/]"
            if header is SUMMARY_HEADER and row[5] != "ok":
                row[5] = f"[yellow]{row[5]}[/]"
            table.add_row(*row)
        out.print(table)


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config defining the grid"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the grid, one line per cell, and exit"),
    results_dir: Path = typer.Option(Path("results"), help="where results/<run_id>/ is written"),
    reports_dir: Path = typer.Option(Path("reports"), help="where reports/<run_id>/ is written"),
    models_dir: Path = typer.Option(Path("models"), help="cache of exported zoo models"),
    report: bool = typer.Option(True, help="build the report after the run"),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID",
                                         help="finish an interrupted run without repeating its finished cells"),
    isolate: bool = typer.Option(True, help="run each cell in a worker process of its own (--no-isolate: in this process, for debugging)"),
    cache: bool = typer.Option(True, help="reuse compiled variants from the artifact cache (--no-cache: build everything afresh)"),
    cache_dir: Optional[Path] = typer.Option(None, help="artifact cache location (default: $BENCH_CACHE_DIR or ~/.cache/bench)"),
    compile_only: bool = typer.Option(False, "--compile-only", help="compile (and tune) every cell into the cache, time nothing (= bench tune)"),
    wait: bool = typer.Option(True, help="wait while another bench run on this machine is timing (--no-wait: refuse, exit 2)"),
    executor_kind: Optional[str] = typer.Option(None, "--executor", help="where cells run: local (worker processes here) or dask (a Dask cluster); default: the config's executor.kind"),
    scheduler: Optional[str] = typer.Option(None, help="--executor dask: the scheduler's address, tcp://HOST:PORT (default $BENCH_SCHEDULER)"),
    shard: Optional[str] = typer.Option(None, metavar="I/N", help="run the I-th of N deterministic slices of the grid, into a run of its own (bench merge joins them)"),
) -> None:
    """Benchmark every cell of CONFIG's grid: compile, validate against the reference, time."""
    # longer than 60 lines: typer reads the command's options from its signature (17 of them).
    from bench.config import load_config
    from bench.runner import execute, plan

    try:
        cfg = load_config(config)
        p = plan(cfg, models_dir, config)
        shard_spec = _parse_shard(shard) if shard else None
        if not dry_run:
            from bench.cache import default_root

            _writable_dir(cache_dir or default_root(), "--cache-dir" if cache_dir else "the artifact cache ($BENCH_CACHE_DIR or ~/.cache/bench)")
        if not dry_run and not compile_only:
            _writable_dir(results_dir, "--results-dir")
            if report:
                _writable_dir(reports_dir, "--reports-dir")
    except BenchError as e:
        _fail(e)
    if compile_only:
        _compile_all(p, cache_dir, executor_kind, scheduler)
        return
    if dry_run:
        _print_grid(p)
        return
    for warning in cfg.warnings():
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    from bench.worker import INTERRUPTS

    reporter = _reporter()
    fleet = None
    try:
        from bench.executors import make_executor

        fleet = make_executor(executor_kind or cfg.executor.kind, scheduler or cfg.executor.scheduler or os.environ.get("BENCH_SCHEDULER"))
        for warning in getattr(fleet, "warnings", []):
            err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        run_dir = execute(p, results_dir, reporter, run_id=resume, isolate=isolate, resume=resume is not None,
                          cache_dir=cache_dir, use_cache=cache, wait=wait, executor=fleet, shard=shard_spec)
    except BenchError as e:
        reporter.progress.stop()
        _fail(e)
    except KeyboardInterrupt:
        reporter.progress.stop()
        rid = resume or reporter.run_id
        err.print(f"[yellow]interrupted ({signal_name(INTERRUPTS.signum)})[/]: the finished cells are kept in "
                  f"{results_dir / str(rid)}; finish the run with: bench run {config} --resume {rid}", highlight=False, soft_wrap=True)
        raise typer.Exit(128 + int(INTERRUPTS.signum))
    finally:
        if fleet is not None:
            fleet.close()  # a fleet's cells in flight are cancelled; threads waiting on them return
    reporter.stop()
    _summarize_run(run_dir, reports_dir if report else None)


def _print_grid(p: Any) -> None:
    for cell in p.cells:
        info = p.models[cell.model]
        typer.echo(f"{cell.model}\t{cell.backend}\t{cell.precision}\tbatch={cell.batch_size}\t"
                   + (f"{cell.scenario}{' ' + cell.rate if cell.rate else ''}\tstreams={cell.streams}\t"
                      if cell.scenario != "single_stream" else "")  # the default scenario: no axis to show
                   + f"inputs={info.shapes(cell.batch_size)}\tsource={info.source}")
    typer.echo(f"{len(p.cells)} cells", err=True)


def _summarize_run(run_dir: Path, reports_dir: Path | None) -> None:
    """The summary table, and the report unless asked not to; Ctrl-C here keeps the complete run."""
    from bench.results import load_run
    from bench.worker import INTERRUPTS

    try:
        stored = load_run(run_dir)
        _print_summary(stored.cells)
        out.print(f"results: {run_dir}")
        if reports_dir is not None:
            from bench.report import build_report

            out.print(f"report:  {build_report(run_dir, reports_dir) / 'report.md'}")
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted ({signal_name(INTERRUPTS.signum)})[/] after the run finished: its results are complete in "
                  f"{run_dir}; build the report with: bench report {run_dir}", highlight=False, soft_wrap=True)
        raise typer.Exit(128 + int(INTERRUPTS.signum))


def _parse_shard(text: str) -> tuple[int, int]:
    import re

    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise BenchError(f"--shard {text}: write I/N with 1 <= I <= N, e.g. --shard 2/4")
    return int(m.group(1)), int(m.group(2))


@app.command("merge")
def merge_cmd(
    runs: list[Path] = typer.Argument(..., help="the shards' run directories (results/<run_id>/)"),
    results_dir: Path = typer.Option(Path("results"), help="where the merged results/<run_id>/ is written"),
    reports_dir: Path = typer.Option(Path("reports"), help="where its report is written"),
    report: bool = typer.Option(True, help="build the merged run's report"),
) -> None:
    """Join the shards of one config (bench run --shard I/N) into one run and one report; refuses
    shards of different configs, or two runs holding the same cell."""
    from bench.merge import merge_runs

    try:
        _writable_dir(results_dir, "--results-dir")
        merged = merge_runs(runs, results_dir)
    except BenchError as e:
        _fail(e)
    out.print(f"merged {len(runs)} runs: {merged}")
    if report:
        from bench.report import build_report

        out.print(f"report:  {build_report(merged, reports_dir) / 'report.md'}")


def signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="a results/<run_id>/ directory"),
    reports_dir: Path = typer.Option(Path("reports"), help="where reports/<run_id>/ is written"),
) -> None:
    """Rebuild plots and report.md from a stored run, without re-running anything."""
    from bench.report import build_report

    try:
        path = build_report(run_dir, reports_dir)
    except BenchError as e:
        _fail(e)
    out.print(f"report: {path / 'report.md'}")


@app.command("profile")
def profile_cmd(
    run_dir: Path = typer.Argument(..., help="a results/<run_id>/ directory"),
    where: Optional[str] = typer.Option(None, "--where", help="only cells matching KEY=VALUE[,KEY=VALUE] (e.g. backend=tvm,batch_size=1)"),
    models_dir: Path = typer.Option(Path("models"), help="cache of exported zoo models"),
    cache_dir: Optional[Path] = typer.Option(None, help="artifact cache location (default: $BENCH_CACHE_DIR or ~/.cache/bench)"),
    reports_dir: Path = typer.Option(Path("reports"), help="where the rebuilt report goes"),
) -> None:
    """Profile a stored run's ok cells per layer with each engine's own profiler (in processes of their
    own), into its profiles/ and layers.parquet, and rebuild its report."""
    from bench.layers import parse_filter
    from bench.report import build_report
    from bench.runner import profile_run

    try:
        done = profile_run(run_dir, models_dir, parse_filter(where, "--where") if where else None, cache_dir=cache_dir)
        for d in done:
            said = (f"coverage {d['profile_coverage']:.0%}, mapped {d['profile_mapped']:.0%}" if "profile_coverage" in d
                    else f"no profile: {d.get('profile_error')}")
            out.print(f"{d['model']} {d['backend']} {d['precision']} b{d['batch_size']}: {escape(said)}", highlight=False)
        path = build_report(run_dir, reports_dir)
    except BenchError as e:
        _fail(e)
    out.print(f"layers: {run_dir / 'layers.parquet'}\nreport: {path / 'report.md'}")


@app.command("explain")
def explain_cmd(
    run_dir: Path = typer.Argument(..., help="a results/<run_id>/ directory with profiles (profile: true, or bench profile RUN)"),
    a: str = typer.Option(..., "--a", help="the cells to explain, KEY=VALUE[,KEY=VALUE] (e.g. backend=tvm)"),
    b: str = typer.Option(..., "--b", help="the cells to compare them with (e.g. backend=onnxruntime)"),
    top: int = typer.Option(10, help="node groups shown per pair of cells"),
) -> None:
    """Where cells A lose time to cells B: per ONNX node group, each side's ms per forward pass and the gap, largest first."""
    from bench import layers
    from bench.report_layers import GAP_HEADER, gap_rows

    try:
        spec_a, spec_b = layers.parse_filter(a, "--a"), layers.parse_filter(b, "--b")
        df = layers.load(run_dir)
        if df.empty:
            raise BenchError(f"{run_dir}: no per-layer profiles; run with `profile: true`, or `bench profile {run_dir}`")
        gap = layers.gap_table(df, spec_a, spec_b, top=top)
        if gap.empty:
            raise BenchError(f"{run_dir}: no profiled cell matches --a {a} with one matching --b {b} on every other cell column")
    except BenchError as e:
        _fail(e)
    from bench.results import CELL_COLUMNS

    keys = [k for k in CELL_COLUMNS if k not in spec_a]  # one table per cell of A (gap_table pairs each with one of B)
    for key, part in (gap.groupby(keys, sort=False, dropna=False) if keys else [((), gap)]):
        key = key if isinstance(key, tuple) else (key,)
        table = Table(title=f"{a} vs {b}: " + " ".join(f"{k}={v}" for k, v in zip(keys, key)), header_style="bold", title_justify="left")
        for c in GAP_HEADER:
            table.add_column(c)
        for row in gap_rows(part):
            table.add_row(*map(escape, row))
        out.print(table)


def _load(run_dir: Path):
    from bench.results import load_run

    try:
        return load_run(run_dir)
    except BenchError as e:
        _fail(e)


def _cells_table(df, columns: list[str], title: str) -> Table:
    table = Table(title=title, header_style="bold", title_justify="left")
    for c in columns:
        table.add_column(c)
    for _, r in df.iterrows():
        table.add_row(*[f"{r[c]:.3g}" if isinstance(r[c], float) else escape(str(r[c])) for c in columns])
    return table


@app.command("gate")
def gate_cmd(
    run_dir: Path = typer.Argument(..., help="a results/<run_id>/ directory"),
    tolerances: Optional[Path] = typer.Option(None, help="YAML {precision: {atol, rtol, min_cosine}} to judge by instead of the run's own (its per-output tolerances still apply)"),
    allow_missing: bool = typer.Option(False, help="pass although planned cells are missing, skipped, failed, crashed, timed out or not validated"),
    allow_incomplete: bool = typer.Option(False, help="judge a run that is not complete (interrupted or still running)"),
) -> None:
    """Accuracy gate: exit 0 when every planned cell was validated within tolerance, 1 when any drifted
    or (unless --allow-missing) is missing or not ok, 2 on bad input (an incomplete run among it)."""
    from bench.verdicts import gate, load_tolerances

    run = _load(run_dir)
    try:
        result = gate(run, load_tolerances(tolerances) if tolerances else None, allow_missing, allow_incomplete)
    except BenchError as e:
        _fail(e)
    rows = result.rows
    if len(result.drifted):
        out.print(_cells_table(result.drifted, ["model", "backend", "precision", "batch_size", "max_abs_err", "max_rel_err",
                                                "cosine", "atol", "rtol", "min_cosine", "note"], "cells that drifted"))
    if len(result.missing):
        out.print(_cells_table(result.missing, ["model", "backend", "precision", "batch_size", "verdict", "note"],
                               "cells not judged" + ("" if allow_missing else " (failing the gate; --allow-missing to pass them)")))
    passed = int((rows["verdict"] == "pass").sum())
    out.print(f"gate: {passed} within tolerance, {len(result.drifted)} drifted, {len(result.missing)} not judged: "
              + ("[bold red]FAIL[/]" if result.exit_code else "[bold green]PASS[/]"))
    raise typer.Exit(result.exit_code)


@app.command("compare")
def compare_cmd(
    run_a: Path = typer.Argument(..., help="the baseline run directory"),
    run_b: Path = typer.Argument(..., help="the candidate run directory"),
    threshold: str = typer.Option("5%", help="noise threshold: changes whose interval lies within it are 'no change'"),
    fail_on_regression: Optional[str] = typer.Option(None, help="exit 1 when a cell is verdict 'slower' by more than this, e.g. 5%, or (unless --allow-missing) missing or not ok in either run"),
    allow_missing: bool = typer.Option(False, help="with --fail-on-regression: do not fail on cells missing or not ok in either run"),
    strict_env: bool = typer.Option(False, help="refuse (exit 2) when the two runs' environments differ"),
    history: Optional[list[Path]] = typer.Option(None, help="results directories holding repeated runs of A's grid, to estimate run-to-run drift (default: the directories of A and B)"),
    no_history: bool = typer.Option(False, "--no-history", help="leave run-to-run drift out: the interval covers variation within the two runs only"),
) -> None:
    """Latency change per cell of B against A, with a 95% interval (hierarchical bootstrap over worker
    processes) and a verdict; cells missing or not ok in either run are listed as `missing`. Offline and
    max_qps cells compare their throughput, as time per sample (positive: fewer samples per second).
    Each interval is widened by the run-to-run drift seen in repeated runs of A's grid on a machine
    of the same environment (bench.history): separate runs differ by more than their processes show."""
    import pandas as pd

    from bench.verdicts import compare_runs, environment_differences, fingerprint_differences, parse_fraction, verdict_counts

    a, b = _load(run_a), _load(run_b)
    try:
        thr = parse_fraction(threshold)
        fail_thr = parse_fraction(fail_on_regression) if fail_on_regression else None
        diffs = environment_differences(a.meta, b.meta)
        if diffs and strict_env:
            raise BenchError("the runs' environments differ: " + "; ".join(diffs))
        drift = None
        if not no_history:
            from bench.history import estimate, similar_runs

            drift = estimate(similar_runs(a, history or [a.run_dir.parent, b.run_dir.parent], exclude=[b.run_dir]))
        table = compare_runs(a, b, thr, strict=fail_thr is not None and not allow_missing, drift=drift)
        if strict_env and fingerprint_differences(table):
            raise BenchError(f"{len(fingerprint_differences(table))} cell(s) ran on machines of different environments: "
                             + fingerprint_differences(table)[0])
    except BenchError as e:
        _fail(e)
    for d in diffs:
        err.print(f"[bold yellow]WARNING: environments differ, latencies may not be comparable:[/] {escape(d)}", highlight=False)
    view = _change_view(table, ("p50_a_ms", "p50_b_ms", "qps_a", "qps_b"))
    view["drift_sd"] = view["drift_sd"].map(lambda v: "–" if pd.isna(v) else f"{v:.1%}")
    if (table["scenario"] == "single_stream").all():  # the default scenario only, no scenario axis in either run: keep the table narrow
        view = view.drop(columns=["scenario", "streams", "rate", "metric", "qps_a", "qps_b"])
    out.print(_cells_table(view, list(view.columns), f"{b.run_id} against {a.run_id} (noise threshold {thr:.1%})"))
    if drift is not None and drift.pooled is None:
        err.print(f"[yellow]note:[/] {drift.note(())}", highlight=False)
    elif drift is not None:
        out.print(f"run-to-run drift from {drift.runs} similar runs: pooled sd {drift.pooled:.1%} of the log figure ({drift.pooled_df} df)")
    out.print(verdict_counts(table))
    _exit_on_regression(table, fail_thr, allow_missing)


@app.command("ab")
def ab_cmd(
    base: Path = typer.Argument(..., help="config A, the baseline"),
    head: Path = typer.Argument(..., help="config B, the candidate (the same file again: an A/A check)"),
    rounds: int = typer.Option(6, help="paired rounds (one worker process of each variant, in a random order) before a verdict may be taken (6 at least)"),
    max_rounds: int = typer.Option(16, help="rounds at most: after --rounds, rounds are added until the interval decides the verdict"),
    threshold: str = typer.Option("5%", help="noise threshold: changes whose interval lies within it are 'no change'"),
    fail_on_regression: Optional[str] = typer.Option(None, help="exit 1 when a pair is verdict 'slower' by more than this, e.g. 5%, or (unless --allow-missing) missing"),
    allow_missing: bool = typer.Option(False, help="with --fail-on-regression: do not fail on pairs that could not be timed"),
    results_dir: Path = typer.Option(Path("results"), help="where results/<id>-A and results/<id>-B are written"),
    models_dir: Path = typer.Option(Path("models"), help="cache of exported zoo models"),
    cache_dir: Optional[Path] = typer.Option(None, help="artifact cache location (default: $BENCH_CACHE_DIR or ~/.cache/bench)"),
    isolate: bool = typer.Option(True, help="worker processes (--no-isolate: in this process, for debugging)"),
) -> None:
    """A/B inside one run: the cells of BASE and HEAD paired by grid key, their worker processes
    interleaved round by round in a random order, the verdict from the paired per-round differences
    (bench.ab). Both variants see the same drift of the machine, so a 5% change can resolve where two
    separate runs cannot."""
    from bench.ab import Rounds, run_ab
    from bench.config import load_config
    from bench.runner import plan
    from bench.verdicts import parse_fraction
    from bench.worker import INTERRUPTS

    try:
        spec = Rounds(rounds, max_rounds, parse_fraction(threshold))
        fail_thr = parse_fraction(fail_on_regression) if fail_on_regression else None
        plans = [plan(load_config(c), models_dir, c) for c in (base, head)]
        _writable_dir(results_dir, "--results-dir")
    except BenchError as e:
        _fail(e)
    reporter = _reporter()
    try:
        dir_a, dir_b, table = run_ab(*plans, results_dir, spec, reporter, isolate=isolate, cache_dir=cache_dir)
    except BenchError as e:
        reporter.progress.stop()
        _fail(e)
    except KeyboardInterrupt:
        reporter.progress.stop()
        err.print(f"[yellow]interrupted ({signal_name(INTERRUPTS.signum)})[/]: what was measured is kept in {results_dir}", highlight=False)
        raise typer.Exit(128 + int(INTERRUPTS.signum))
    reporter.stop()
    _print_ab(table, spec, dir_a, dir_b)
    _exit_on_regression(table, fail_thr, allow_missing)


def _change_view(table: Any, figures: tuple[str, ...]) -> Any:
    """compare's and ab's tables for the terminal: changes and intervals in signed percent, figures
    to four significant digits, a dash where there is none."""
    import pandas as pd

    view = table.copy()
    for c in ("change", "ci_low", "ci_high"):
        view[c] = view[c].map(lambda v: "–" if pd.isna(v) else f"{v:+.1%}")
    for c in figures:
        view[c] = view[c].map(lambda v: "–" if pd.isna(v) else f"{v:.4g}")
    return view


def _print_ab(table: Any, spec: Any, dir_a: Path, dir_b: Path) -> None:
    from bench.verdicts import verdict_counts

    view = _change_view(table.drop(columns=["scenario", "streams", "rate"] if (table["scenario"] == "single_stream").all() else []),
                        ("p50_a_ms", "p50_b_ms"))
    view = view.drop(columns=["target_a", "target_b"]) if (table["target_a"] == table["target_b"]).all() else view
    out.print(_cells_table(view, list(view.columns), f"A/B: {dir_b.name} against {dir_a.name} (noise threshold {spec.threshold:.1%})"))
    out.print(verdict_counts(table))
    out.print(f"runs: {dir_a} (A), {dir_b} (B); verdicts in ab.csv of both")


def _exit_on_regression(table: Any, fail_thr: float | None, allow_missing: bool) -> None:
    """Exit 1 when a cell is `slower` by more than `fail_thr`, or (unless allowed) missing."""
    if fail_thr is None:
        return
    regressed = table[(table["verdict"] == "slower") & (table["change"] > fail_thr)]
    missing = table[table["verdict"] == "missing"]
    why = []
    if len(regressed):
        why.append(f"{len(regressed)} cell(s) slower by more than {fail_thr:.1%}")
    if len(missing) and not allow_missing:
        why.append(f"{len(missing)} cell(s) missing or not ok in either run (--allow-missing to pass them)")
    if why:
        out.print("[bold red]FAIL[/]: " + "; ".join(why))
        raise typer.Exit(1)


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="a results/<run_id>/ directory"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write the JSON"),
) -> None:
    """Write a run as pytest-benchmark JSON, for dashboards that already read it."""
    import json

    from bench.export import to_pytest_benchmark

    output.write_text(json.dumps(to_pytest_benchmark(_load(run_dir)), indent=2, default=str))
    out.print(f"wrote {output}")


golden_app = typer.Typer(help="Stored reference outputs, so CI can validate without running the reference backend.")
app.add_typer(golden_app, name="golden")


@golden_app.command("save")
def golden_save(
    config: Path = typer.Argument(..., help="YAML config whose models and batch sizes to store"),
    out_dir: Path = typer.Option(Path("goldens"), "--out", help="directory for <model>-b<batch>.npz files"),
    models_dir: Path = typer.Option(Path("models"), help="cache of exported zoo models"),
) -> None:
    """Run the config's reference backend on the seeded inputs and store its outputs; point a config's
    `goldens:` key at the directory to validate against them."""
    from bench.config import load_config
    from bench.runner import plan, save_goldens

    try:
        p = plan(load_config(config), models_dir, config)
        for path in save_goldens(p, out_dir):
            out.print(f"{path}  ({path.stat().st_size / 1024:.1f} KiB)")
    except BenchError as e:
        _fail(e)


@app.command()
def tune(
    config: Path = typer.Argument(..., help="YAML config whose cells to compile"),
    models_dir: Path = typer.Option(Path("models"), help="cache of exported zoo models"),
    cache_dir: Optional[Path] = typer.Option(None, help="artifact cache location (default: $BENCH_CACHE_DIR or ~/.cache/bench)"),
    executor_kind: Optional[str] = typer.Option(None, "--executor", help="where jobs run: local, or dask (each job takes a worker's compile_slot); default: the config's executor.kind"),
    scheduler: Optional[str] = typer.Option(None, help="--executor dask: the scheduler's address (default $BENCH_SCHEDULER)"),
) -> None:
    """Compile every cell into the artifact cache, tuning where a backend tunes (tvm_tuned), timing nothing.
    A later `bench run` of the same config finds everything built."""
    from bench.config import load_config
    from bench.runner import plan

    try:
        p = plan(load_config(config), models_dir, config)
    except BenchError as e:
        _fail(e)
    _compile_all(p, cache_dir, executor_kind, scheduler)


def _compile_all(p, cache_dir: Optional[Path], executor_kind: Optional[str] = None, scheduler: Optional[str] = None) -> None:
    import tempfile

    import pandas as pd

    from bench.executors import make_executor
    from bench.runner import compile_all

    reporter = _reporter()
    try:
        fleet = make_executor(executor_kind or p.config.executor.kind,
                              scheduler or p.config.executor.scheduler or os.environ.get("BENCH_SCHEDULER"))
    except BenchError as e:
        _fail(e)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tune-") as work:
            rows = compile_all(p, Path(work), reporter, cache_dir, executor=fleet)
    finally:
        fleet.close()
    reporter.stop()
    df = pd.DataFrame(rows)
    cols = [c for c in ("model", "backend", "precision", "batch_size", "status", "variant", "compile_s", "cache_hit",
                        "tuning_trials", "tuning_failed_trials", "tuning_s", "arch", "executes_as", "error") if c in df.columns]
    out.print(_cells_table(df[cols].fillna("–"), cols, "compiled"))


@app.command("bundle")
def bundle_cmd(
    config: Path = typer.Argument(..., help="YAML config whose TVM cells to bundle"),
    out_dir: Path = typer.Option(..., "-o", "--out", help="a new directory for the bundle"),
    python: Optional[str] = typer.Option(None, help="Python version of the machine that will run it, e.g. 3.12 (default: this one)"),
    models_dir: Path = typer.Option(Path("models"), help="cache of exported zoo models"),
    cache_dir: Optional[Path] = typer.Option(None, help="artifact cache location (default: $BENCH_CACHE_DIR or ~/.cache/bench)"),
) -> None:
    """Compiled libraries, seeded inputs, reference outputs, a runtime-only TVM and a numpy-only runner:
    measure the config's TVM cells on a machine that has neither bench nor TVM's compiler."""
    from bench import bundle
    from bench.config import load_config
    from bench.runner import plan

    try:
        p = plan(load_config(config), models_dir, config)
        reporter = _reporter()
        manifest = bundle.build(p, out_dir, cache_dir, python, reporter)
        reporter.stop()
    except BenchError as e:
        _fail(e)
    for c in manifest["cells"]:
        out.print(f"bundled  {c['model']} {c['backend']} {c['precision']} b{c['batch_size']} ({c['device']}"
                  + (f" {c['arch']}" if c.get("arch") else "") + ")", highlight=False)
    for c in manifest["not_bundled"]:
        out.print(f"[yellow]not bundled[/] {escape(c['cell'])}: {escape(str(c['why']))}", highlight=False)
    sizes = manifest["sizes_mb"]
    out.print(f"{out_dir}: {sizes['total']} MiB (runtime {sizes['runtime']}, libraries {sizes['libraries']}, "
              f"inputs and references {sizes['data']})", highlight=False)
    out.print(f"run it where it will run: python3 {out_dir}/run.py   (needs Python {manifest['created']['runtime']['python']} and numpy)",
              highlight=False)


@app.command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="an .onnx file"),
    dim: list[str] = typer.Option([], "--dim", help="NAME=SIZE for a named dynamic dimension (repeatable)"),
    shape: list[str] = typer.Option([], "--shape", help="INPUT=d0,d1,... ('batch' allowed) fixing an input by position (repeatable)"),
    batch: int = typer.Option(1, min=1, help="batch size for the FLOP count"),
    as_json: bool = typer.Option(False, "--json", help="print the description as JSON"),
) -> None:
    """Inputs and outputs (dtypes, dynamic dims), opset, operators, parameters, the FLOPs of one forward
    pass at given shapes, and the `input_shapes:` block to paste into a config."""
    import json

    from pydantic import ValidationError

    from bench.models.describe import describe, parse_dims, parse_shapes, render

    try:
        if not model.is_file():
            raise BenchError(f"{model}: no such file")
        desc = describe(model, parse_shapes(shape), parse_dims(dim), batch)
    except BenchError as e:
        _fail(e)
    except ValidationError as e:
        _fail(BenchError("; ".join(f"{'.'.join(str(p) for p in x['loc'])}: {x['msg']}" for x in e.errors())))
    print(json.dumps(desc, indent=2, default=str) if as_json else render(desc))


cache_app = typer.Typer(help="The artifact cache: converted models, compiled libraries, tuning databases, engines.")
app.add_typer(cache_app, name="cache")


def _cache(cache_dir: Optional[Path]):
    from bench.cache import ArtifactCache, default_root

    return ArtifactCache(cache_dir or default_root())


@cache_app.command("ls")
def cache_ls(cache_dir: Optional[Path] = typer.Option(None, help="default: $BENCH_CACHE_DIR or ~/.cache/bench")) -> None:
    """List cache entries: kind, size and what they were built from."""
    c = _cache(cache_dir)
    entries = c.entries()
    table = Table(title=f"{c.root}", header_style="bold", title_justify="left")
    for h in ("kind", "digest", "MiB", "built from"):
        table.add_column(h)
    for e in entries:
        key = e["key"]
        what = ", ".join(f"{k}={str(v)[:16]}" for k, v in key.items() if k in ("model_sha256", "precision", "shapes", "transform", "variant", "trials"))
        table.add_row(e["kind"], e["digest"][:12], f"{e['size_mb']:.1f}", escape(what))
    out.print(table)
    out.print(f"{len(entries)} entries, {sum(e['size_mb'] for e in entries):.1f} MiB")


@cache_app.command("clear")
def cache_clear(
    kind: Optional[str] = typer.Option(None, help="only entries of this kind (see `bench cache ls`)"),
    cache_dir: Optional[Path] = typer.Option(None, help="default: $BENCH_CACHE_DIR or ~/.cache/bench"),
) -> None:
    """Delete cache entries (all, or one kind)."""
    n = _cache(cache_dir).clear(kind)
    out.print(f"removed {n} entries")


@app.command()
def doctor() -> None:
    """Which backends are usable here, their versions, and why not."""
    from bench.backends import BACKENDS, describe
    from bench.environment import cpu_model, library_versions

    out.print(f"CPU: {cpu_model()}  Python {sys.version.split()[0]}")
    from bench.backends import options_model
    from bench.config import describe_options

    table = Table(header_style="bold")
    for h in ("backend", "usable", "precisions", "versions / reason", "backend_options (defaults)"):
        table.add_column(h)
    for name in BACKENDS:
        d = describe(name)
        detail = ", ".join(f"{k} {v}" for k, v in d["versions"].items()) if d["usable"] else d["reason"]
        try:
            opts = describe_options(options_model(name))
        except Exception as e:
            opts = f"({type(e).__name__})"
        table.add_row(name, "[green]yes[/]" if d["usable"] else "[red]no[/]", ", ".join(d["precisions"]) or "–", escape(detail),
                      escape(opts))
    out.print(table)
    libs = library_versions()
    out.print("libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()), highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit codes: 0 pass, 1 a failing verdict, 2 bad input, 3 an internal error (a bug:
    one line here, the traceback in a file), 130 Ctrl-C. Never 1 for a crash."""
    import faulthandler
    import signal
    import tempfile
    import traceback

    if hasattr(signal, "SIGUSR1"):
        try:
            faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a stuck run is
        except (ValueError, OSError):  # stderr is not a file (captured): no stack dumps then
            pass
    from bench.worker import INTERRUPTS, raise_on_stop_signals

    raise_on_stop_signals()
    try:
        app(args=argv)  # standalone: usage errors exit 2, typer.Exit its code, Ctrl-C 130 (SystemExit)
        return 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        return 128 + int(INTERRUPTS.signum) if code == 130 else code  # typer says 130 for any interrupt
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted ({signal_name(INTERRUPTS.signum)})[/]", highlight=False)
        return 128 + int(INTERRUPTS.signum)
    except OSError as e:  # a path that is a file, not writable, missing: the user's to fix
        where = e.filename if e.filename is not None else ""
        err.print(f"[bold red]error:[/] {escape(str(where))}: {escape(e.strerror or str(e))}"
                  + (f" ({escape(str(e.filename2))})" if getattr(e, "filename2", None) else ""), highlight=False, soft_wrap=True)
        return 2
    except BenchError as e:
        for line in str(e).splitlines():
            err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return 2
    except Exception as e:
        fd, path = tempfile.mkstemp(prefix="bench-crash-", suffix=".txt")
        with open(fd, "w") as f:
            f.write("".join(traceback.format_exception(e)))
        first = (str(e).splitlines() or [""])[0][:300]
        err.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(first)} (a bug in bench; traceback in {path})",
                  highlight=False, soft_wrap=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
