"""`koala-sweep report`: one self-contained HTML file (checked in a real Chromium), PNG and PDF
figures, clear errors, and the speed goal for 2,000 trials x 50 epochs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from koala_sweep.report import LayoutError, load_layout, write_report
from koala_sweep.report.html import report_html
from koala_sweep.store import open_store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic_study import fill  # noqa: E402


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("koala-sweep", path=str(Path(sys.executable).parent))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def synthetic_url(tmp_path_factory):
    """2,000 trials x 50 epochs (3 arms, 2 seeds per configuration), finished."""
    url = f"sqlite:///{tmp_path_factory.mktemp('synthetic')}/store.db"
    fill(url, "synthetic", configurations=333, epochs=50, seeds=2)
    return url


def check_rendered(watch, html_path: Path, name: str) -> tuple[int, set[str]]:
    """Open a report in Chromium: no JavaScript error, no network request, every figure drawn,
    with data or with a message saying why there is none. Returns the number of panels and
    the kinds of the panels without data."""
    watch.page.goto(html_path.resolve().as_uri())
    watch.page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')]"
        ".every(g => g.querySelector('.main-svg'))",
        timeout=60_000,
    )
    panels = watch.page.query_selector_all("section.panel")
    without_data = set()
    for panel in panels:
        kind = panel.get_attribute("data-kind")
        figures = panel.evaluate(
            "p => [...p.querySelectorAll('.js-plotly-plot')].map(g => [g.data.length,"
            " (g.layout.annotations || []).map(a => a.text).join(' ')])"
        )
        rows = panel.evaluate("p => p.querySelectorAll('table tbody tr').length")
        assert figures or rows, f"panel {kind} shows neither a figure nor a table"
        for traces, message in figures:
            if traces == 0:
                assert message, f"panel {kind} has an empty figure that does not say why"
                without_data.add(kind)
    watch.screenshot(name)
    assert watch.errors == []
    offline = [u for u in watch.requests if not u.startswith(("file:", "data:", "blob:"))]
    assert offline == [], f"the report made network requests: {offline[:5]}"
    return len(panels), without_data


@pytest.mark.slow
def test_report_of_2000_trials_is_fast_self_contained_and_renders(
    synthetic_url, tmp_path, watched_page
):
    out = tmp_path / "report.html"
    t0 = time.perf_counter()
    result = _cli("report", "synthetic", "--storage", synthetic_url, "-o", str(out))
    seconds = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr
    assert seconds < 20, f"report of 2,000 trials x 50 epochs took {seconds:.1f} s"
    text = out.read_text()
    # plotly.js is inlined (it mentions its CDN itself); nothing after it loads from the web.
    assert text.count("<script") >= 2 and "<script src" not in text
    after_library = text.split("</script>", 1)[1]
    assert "http://" not in after_library.replace("http://127.0.0.1", "")
    assert "cdn.plot.ly" not in after_library
    assert text.index("The answer in numbers") < text.index("What tuning buys")
    # The study file and the environment close the report.
    assert "name: synthetic" in text and "Environment" in text
    n, without_data = check_rendered(watched_page, out, "report-synthetic-2000-trials")
    assert n == len(load_layout().panels) and without_data == set()
    # Every figure kind drew data here: importance had enough full-budget configurations.
    assert "not enough full-budget configurations" not in text


def test_png_and_pdf_figures(synthetic_url, tmp_path):
    layout_file = tmp_path / "layout.yaml"
    layout_file.write_text(
        "title: two panels\npanels:\n  - {kind: summary, title: Numbers}\n"
        "  - {kind: tunability, title: Tuning}\n"
    )
    for fmt, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        result = _cli(
            "report",
            "synthetic",
            "--storage",
            synthetic_url,
            "--format",
            fmt,
            "--layout",
            str(layout_file),
            "-o",
            str(tmp_path / fmt),
        )
        assert result.returncode == 0, result.stderr
        files = sorted((tmp_path / fmt).iterdir())
        assert [f.name for f in files] == [f"01-summary-table.{fmt}", f"02-tunability.{fmt}"]
        assert all(f.read_bytes().startswith(magic) and f.stat().st_size > 5000 for f in files)


def test_unknown_study_lists_the_studies(synthetic_url, tmp_path):
    result = _cli("report", "nope", "--storage", synthetic_url, "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2
    assert "no study named 'nope'" in result.stderr and "synthetic" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_bad_layout_names_file_and_key(tmp_path, synthetic_url):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\npanels:\n  - {kind: summary, title: a}\n  - {kind: pie, title: b}\n")
    with pytest.raises(LayoutError, match=r"bad.yaml: panels\[1\]\.kind: "):
        load_layout(bad)
    result = _cli("report", "synthetic", "--storage", synthetic_url, "--layout", str(bad))
    assert result.returncode == 2 and "panels[1].kind" in result.stderr


def test_study_without_finished_trials_says_so(tmp_path, watched_page):
    url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(url)
    w = store.writer
    sid = w.create_study(
        "fresh",
        "name: fresh\nepochs: 3\n",
        workload="fashion_mnist_cnn",
        metric="val_loss",
        direction="minimize",
        package_versions={},
        device="cpu",
    )
    arm = w.add_arm(
        sid,
        "adam",
        optimizer="adam",
        search_space={"lr": {"log_uniform": [1e-4, 1e-2]}},
        budget=4,
        optuna_study_name="fresh/adam",
    )
    w.start_trial(arm, {"lr": 0.001}, seed=0, optuna_trial_number=0)
    (path,) = write_report(store, "fresh", tmp_path / "fresh.html")
    text = path.read_text()
    assert 'id="no-finished"' in text and "no finished trials yet" in text
    watched_page.page.goto(path.as_uri())
    watched_page.page.wait_for_selector("#no-finished")
    watched_page.screenshot("report-no-finished-trials")
    assert watched_page.errors == []


def test_report_never_shows_a_storage_password():
    record = {
        "name": "s",
        "workload": "w",
        "metric": "m",
        "direction": "minimize",
        "created_at": "2026-01-01",
        "spec_yaml": "name: s\n",
        "package_versions": {},
    }
    text = report_html(record, [], "t", "postgresql+psycopg://ana:s3cret@db:5432/k", {})
    assert "s3cret" not in text and "ana:***@db" in text


def test_a_failing_panel_says_why_and_the_others_still_render(synthetic_url, tmp_path, monkeypatch):
    from koala_sweep.report import panels

    def broken(a, spec):
        raise ZeroDivisionError("a bug in one panel")

    monkeypatch.setitem(panels.BUILDERS, "robustness", broken)
    store = open_store(synthetic_url, create=False)
    (path,) = write_report(store, "synthetic", tmp_path / "r.html")
    text = path.read_text()
    assert "This panel could not be drawn: ZeroDivisionError: a bug in one panel" in text
    assert text.count('class="panel"') == len(load_layout().panels)


def test_a_study_without_arms_yet_gets_a_report(tmp_path):
    # The launcher writes the study before its arms: a reader can arrive in between.
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    store.writer.create_study(
        "early",
        "name: early\nepochs: 2\n",
        workload="w",
        metric="val_loss",
        direction="minimize",
        package_versions={},
        device="cpu",
    )
    (path,) = write_report(store, "early", tmp_path / "early.html")
    text = path.read_text()
    assert "no finished trials yet" in text and "could not be drawn" not in text


def test_report_from_a_postgresql_store(postgres_url, tmp_path):
    fill(postgres_url, "pg", configurations=12, epochs=5, seeds=2)
    (path,) = write_report(open_store(postgres_url, create=False), "pg", tmp_path / "pg.html")
    text = path.read_text()
    assert "The answer in numbers" in text and "could not be drawn" not in text
    assert "72 trials" in text  # 3 arms x 12 configurations x 2 seeds
