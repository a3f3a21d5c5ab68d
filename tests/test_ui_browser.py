"""The UIs as an operator uses them: `vidssl ui`/`vidssl server` stop whole, and a real browser finds a pipeline
run's parent run, a nested stage run, a metric chart and a plot artifact in the MLflow UI.

The browser part drives the system's Chromium through Playwright and is skipped, saying why, when either is
missing (install: `apt-get install chromium` and `pip install playwright`). Screenshots go to
$VIDSSL_SCREENSHOTS (default: the test's temporary folder); docs/img/ holds a copy made this way.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("VIDSSL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 180.0  # a cold MLflow server start (imports, migrations) on a busy 2-core runner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    """Nothing listens on ``port`` and a new server could bind it (SO_REUSEADDR, as servers do)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(args: list[str], cwd: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "vidssl.cli", *args, "--port", str(port)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-tree check reads /proc (Linux)")
@pytest.mark.parametrize("command,sig", [("ui", signal.SIGINT), ("server", signal.SIGTERM)])
def test_a_signal_stops_the_whole_process_tree_and_frees_the_port(tmp_path: Path, command: str,
                                                                   sig: signal.Signals) -> None:
    port = _free_port()
    proc = _start([command], tmp_path, port)
    tree = _descendants(proc.pid)
    assert tree, "the server runs as child processes"
    assert not _port_free(port)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.2)
    assert [p for p in tree if _alive(p)] == []
    assert _port_free(port)
    if command == "server":  # state lives where --help says: the sqlite store under mlruns/
        assert (tmp_path / "mlruns" / "mlflow.db").is_file()


# ---------------------------------------------------------------- the real browser


def _browser_or_skip() -> object:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no browser driver: `pip install playwright` (the system Chromium is used, nothing downloaded)")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(f"no browser: {CHROMIUM} not found (`apt-get install chromium`, or set VIDSSL_CHROMIUM)")
    return sync_playwright


@pytest.fixture
def pipeline_store(tiny_lists: Path, tmp_path: Path) -> Path:
    """A workspace whose mlruns/ holds one tracked pipeline run (tiny pretrain, finetune, retrieve, evaluate)."""
    from vidssl.config import parse_params
    from vidssl.pipeline.stages import run_evaluate, run_finetune, run_pretrain, run_retrieve

    work, lists = tmp_path / "workspace", tiny_lists
    work.mkdir()
    cfg = parse_params({
        "seed": 3, "model": {"backbone": "tiny", "width": 4},
        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
        "pretrain": {"epochs": 3, "batch_size": 4, "workers": 0, "iic": {"nce_k": 4}},
        "finetune": {"epochs": 2, "batch_size": 4, "workers": 0, "test_clips": 2, "baseline": False},
        "retrieve": {"clips": 2, "workers": 0, "topk": [1, 5]},
        "registry": {"metric": "retrieval.pretrained.top1"},
    }, "ui test params")
    (work / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    old_cwd, saved = os.getcwd(), {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "VIDSSL_PIPELINE_ID")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["VIDSSL_PIPELINE_ID"] = "ui-test-pipeline"
    os.chdir(work)
    try:
        m, p, mod = Path("metrics"), Path("plots"), Path("models")
        run_pretrain(cfg, lists, mod / "pretrain", mod / "pretrain_state", m / "pretrain.json", p)
        run_finetune(cfg, lists, mod / "pretrain" / "backbone.pt", mod / "finetune", mod / "finetune_state",
                     m / "finetune.json", p, baseline=False)
        run_retrieve(cfg, lists, mod / "pretrain" / "backbone.pt", Path("features"), m / "retrieve.json")
        run_evaluate(cfg, m, Path("reports/results.md"), m / "summary.json")
    finally:
        os.chdir(old_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return work


@pytest.mark.slow
def test_mlflow_ui_shows_the_pipeline_in_a_real_browser(pipeline_store: Path, tmp_path: Path) -> None:
    """Parent run by name, a nested stage run, a metric chart and a plot artifact, each with a screenshot."""
    import mlflow

    sync_playwright = _browser_or_skip()
    shots = Path(os.environ.get("VIDSSL_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(f"sqlite:///{pipeline_store / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vidssl")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("vidssl.role") == "pipeline")
    pretrain = next(r for r in runs if r.data.tags.get("vidssl.stage") == "pretrain")
    port = _free_port()
    ui = _start(["ui"], pipeline_store, port)
    base = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}"
    ml = "?workflowType=machine_learning"  # MLflow 3's model-training view (a fresh browser starts in GenAI)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(180_000)  # a busy 2-core runner serves MLflow's bundle slowly
            page.set_default_navigation_timeout(180_000)
            # 1. The experiment's run list: the parent run, by its readable name, with its stage runs nested.
            page.goto(base + "/runs" + ml)
            cell = page.locator("[role=gridcell][col-id='attributes.`Run Name`']", has_text=parent.info.run_name)
            cell.first.wait_for()
            close = page.get_by_role("button", name="Close")  # the assistant panel, where opened, covers the page
            if close.count():
                close.first.click()
            cell.first.locator("button").first.click()  # expand the parent: its stage runs
            for stage in ("pretrain", "finetune", "retrieve", "evaluate"):
                page.get_by_text(stage, exact=True).first.wait_for()
            page.screenshot(path=str(shots / "mlflow-runs.png"))
            # 2. The parent run: summary metrics.
            page.goto(f"{base}/runs/{parent.info.run_id}{ml}")
            page.get_by_text("retrieval.pretrained.top1").first.wait_for()
            page.screenshot(path=str(shots / "mlflow-parent.png"))
            # 3. The nested pretrain run's metric charts: the loss chart, one point per epoch.
            page.goto(f"{base}/runs/{pretrain.info.run_id}/model-metrics{ml}")
            page.get_by_text("pretrain (loss)", exact=True).first.wait_for()
            page.locator("svg.main-svg").first.wait_for()  # plotly drew the charts
            page.screenshot(path=str(shots / "mlflow-metric-chart.png"))
            # 4. The plot artifact, previewed as an image.
            page.goto(f"{base}/runs/{pretrain.info.run_id}/artifacts{ml}")
            page.get_by_text("pretrain_loss.png").first.click()
            page.locator("img[src^='blob:']").first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "mlflow-plot-artifact.png"))
            browser.close()
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.communicate(timeout=60)
    for name in ("mlflow-runs", "mlflow-parent", "mlflow-metric-chart", "mlflow-plot-artifact"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name  # a rendered page, not a blank one
