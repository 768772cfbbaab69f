"""report.html: one self-contained page per run, rebuilt by `bench report`, opened in a real browser
(Debian's headless Chromium: `apt-get install chromium`; .ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from bench.report import build_report
from bench.report_html import markdown_to_html
from bench.runner import execute, plan
from tests import fakes
from tests.test_runner import _config

CHROMIUM = shutil.which("chromium")  # Debian's package (Ubuntu's chromium-browser is a snap stub)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"]


@pytest.fixture
def report_dir(monkeypatch, mlp_onnx, tmp_path):
    fakes.install(monkeypatch)
    cfg = _config(mlp_onnx, ["fake", "fake_drift"], precisions=["fp32"], batch_sizes=[1, 3])
    run_dir = execute(plan(cfg, tmp_path / "models"), tmp_path / "results", run_id="html", isolate=False)
    return run_dir, build_report(run_dir, tmp_path / "reports")


def test_the_html_report_is_self_contained_sortable_and_rebuilt(report_dir, tmp_path):
    run_dir, out = report_dir
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched at view time
    assert page.count("data:image/png;base64,") == len(list(out.glob("*.png"))) > 0
    assert page.count('<table class="sortable">') >= 1 and "<th>p50 ms</th>" in page
    cells = pd.read_csv(run_dir / "cells.csv")
    assert page.count("<circle") == int((cells["status"] == "ok").sum())  # a point per timed cell ...
    assert "95% interval" in page and 'class="bad"' in page  # ... naming its interval on hover; drifted ones red
    (out / "report.html").unlink()
    build_report(run_dir, out.parent)
    assert (out / "report.html").read_text() == page


def test_the_latency_chart_takes_single_stream_cells_and_unknown_intervals():
    from bench.report_html import latency_chart

    rows = pd.DataFrame([
        {"model": "m", "backend": "b", "precision": "fp32", "batch_size": 1, "scenario": "offline", "streams": 1, "status": "ok",
         "p50_ms": 5.0, "p50_ci_low_ms": float("nan"), "p50_ci_high_ms": float("nan"), "validated": True, "accuracy_ok": True},
        {"model": "m", "backend": "b", "precision": "fp32", "batch_size": 1, "scenario": "single_stream", "streams": 1, "status": "ok",
         "p50_ms": 2.0, "p50_ci_low_ms": float("nan"), "p50_ci_high_ms": float("nan"), "validated": True, "accuracy_ok": True},
    ])
    svg = latency_chart(rows)
    assert svg.count("<circle") == 1 and "interval" not in svg  # the LoadGen row left out; no interval made up
    assert latency_chart(rows.iloc[:1]) == ""


def test_markdown_tables_keep_escaped_pipes_and_marks():
    page = markdown_to_html("# T\n\n| a | b |\n|---|---|\n| x \\| y | **bold** `c` |\n\n- one\n- two", Path("."))
    assert "<td title=\"x | y\">x | y</td>" in page and "<b>bold</b> <code>c</code>" in page and page.count("<li>") == 2


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HOME": str(tmp_path)})


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: apt-get install chromium (.ci/run does)")
def test_the_html_report_opens_in_headless_chromium_with_no_console_errors(report_dir, tmp_path):
    from matplotlib.image import imread

    _, out = report_dir
    url = (out / "report.html").resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    ready = re.search(r'<body data-ready="(\d+)"', dom.stdout)
    assert ready and int(ready.group(1)) >= 1, dom.stdout[:500]  # the page's script ran and found its tables
    assert "fake_drift" in dom.stdout and "<th>p50 ms</th>" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    # the checks above can see what they claim: #selftest sorts the table by p50 (twice: descending) and logs to the console
    probe = _chromium(["--dump-dom", url + "#selftest"], tmp_path)
    assert any("bench-selftest" in line and "CONSOLE" in line for line in probe.stderr.splitlines()), probe.stderr[-2000:]
    table = probe.stdout.split('<table class="sortable">', 1)[1].split("</table>", 1)[0]
    p50s = [float(v) for v in re.findall(r"<tr><td[^>]*>(?:[^<]*</td><td[^>]*>){6}([0-9.]+)</td>", table)]
    assert len(p50s) >= 2 and p50s == sorted(p50s, reverse=True), p50s
    shot = tmp_path / "report.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars", url], tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = imread(str(shot))
    assert pixels.shape[:2] == (1600, 1280) and pixels[..., :3].std() > 0.05  # a rendered page, not a blank one
    shutil.copy(shot, out / "screenshot.png")  # kept beside the report for a person to look at
