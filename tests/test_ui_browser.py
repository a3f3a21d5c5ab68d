"""The UIs as an operator uses them: `vidssl ui`/`vidssl server` stop whole; a real browser finds a pipeline
run's parent run, a nested stage run, a metric chart and a plot artifact in the MLflow UI, and, in the Prefect
UI of `vidssl serve`, the nightly and on-demand deployments with their schedule and a flow run with its stage
tasks.

The browser part drives the system's Chromium through Playwright and is skipped, saying why, when either is
missing (install: `apt-get install chromium` and `pip install playwright`). Screenshots go to
$VIDSSL_SCREENSHOTS (default: the test's temporary folder); docs/img/ holds a copy made this way.
"""

from __future__ import annotations

import datetime
import json
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
import yaml

from vidssl.pipeline.servers import stop_group

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

    client = mlflow.MlflowClient(f"sqlite:///{pipeline_store / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vidssl")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("vidssl.role") == "pipeline")
    pretrain = next(r for r in runs if r.data.tags.get("vidssl.stage") == "pretrain")
    finetune = next(r for r in runs if r.data.tags.get("vidssl.stage") == "finetune")
    weights = [a.path for a in client.list_artifacts(finetune.info.run_id, "weights/pretrained")]
    assert weights == ["weights/pretrained/classifier.pt"]  # the fine-tuned model is kept with its run
    sync_playwright = _browser_or_skip()
    shots = Path(os.environ.get("VIDSSL_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
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


# ---------------------------------------------------------------- the Prefect UI of `vidssl serve`

# The data stages of the real pipeline at the smallest size params allow: a flow run with stage tasks in well
# under a minute of CPU (the training stages would take minutes here, and tests/test_deploy_e2e.py runs them).
UI_STAGES = ["synth", "extract", "lists"]
UI_PARAMS = {"synth": {"n_classes": 8, "videos_per_class": 4, "size": 32, "frames": 8},
             "extract": {"short_side": 32, "workers": 2}}
GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
          "GIT_COMMITTER_EMAIL": "t@example.org"}
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# The server's scheduler turns the nightly cron into scheduled flow runs, and `vidssl serve` runs one whose time
# comes: a test that spans the cron's minute would start a whole pipeline beside the one it checks. Off, the
# schedule is still registered, active and shown; nothing is scheduled from it.
NO_SCHEDULER = {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}


def _api(url: str, body: dict | None = None) -> object:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read() or b"null")


def _tiny_checkout(dest: Path, env: dict[str, str]) -> Path:
    """A committed git + DVC checkout of this repo's pipeline with the tiny data params."""
    dest.mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("stages", "vidssl", "presets", "flows"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in UI_PARAMS.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "pipeline"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process-tree check reads /proc (Linux)")
def test_prefect_ui_shows_the_deployments_and_a_flow_run_in_a_real_browser(tmp_path: Path) -> None:
    """`vidssl serve` in a checkout; one on-demand run of the data stages; then, in the browser, the
    deployments with the nightly schedule and the flow run with one task run per stage and its final state.
    Everything `vidssl serve` started is gone after SIGTERM."""
    sync_playwright = _browser_or_skip()
    shots = Path(os.environ.get("VIDSSL_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    nightly_spec = next(d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
                        if d["name"] == "nightly")["schedules"][0]
    cron, zone = nightly_spec["cron"], nightly_spec["timezone"]
    minute, hour, *rest = cron.split()
    assert rest == ["*", "*", "*"], f"the UI's words below are those of a daily cron, not {cron!r}"
    words = datetime.time(int(hour), int(minute)).strftime("At %I:%M %p")  # how the UI reads it: At 02:00 AM
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIDSSL_", "MLFLOW_"))}
    env.update(GIT_ID, DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1", MLFLOW_DISABLE_TELEMETRY="true",
               GX_ANALYTICS_ENABLED="false", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    work = _tiny_checkout(tmp_path / "workspace", env)
    home = tmp_path / "prefect-home"
    env.update(PYTHONPATH=str(work), PREFECT_HOME=str(home),
               PREFECT_RUNNER_POLL_FREQUENCY="1",  # the served runner picks the run up in 1 s, not 10
               **NO_SCHEDULER)
    port = _free_port()
    api, base = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}/v2"  # V2: where a new browser lands
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen([sys.executable, "-m", "vidssl.cli", "serve", "--port", str(port)], cwd=work,
                             env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    tree: set[int] = set()
    try:
        deadline, deployments = time.monotonic() + START_TIMEOUT_S, {}
        while set(deployments) != {"nightly", "on-demand"}:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "`vidssl serve` never registered its deployments"
            time.sleep(1)
            try:
                deployments = {d["name"]: d for d in _api(f"{api}/deployments/filter", {})}
            except OSError:
                continue
        schedules = [s["schedule"] for s in deployments["nightly"]["schedules"]]
        assert [(s["cron"], s["timezone"]) for s in schedules] == [(cron, zone)]  # = prefect.yaml
        assert deployments["on-demand"]["schedules"] == []
        tree = _descendants(serve.pid)  # the Prefect server and its workers, to be checked after the stop

        run = _api(f"{api}/deployments/{deployments['on-demand']['id']}/create_flow_run",
                   {"parameters": {"stages": UI_STAGES}})
        deadline = time.monotonic() + 600
        while (state := _api(f"{api}/flow_runs/{run['id']}")["state"])["type"] not in FINAL:
            assert serve.poll() is None and time.monotonic() < deadline, (state, (tmp_path / "serve.log")
                                                                           .read_text()[-3000:])
            time.sleep(1)
        n = len(UI_STAGES)
        message = f"reran {n} of {n} stage(s): {', '.join(UI_STAGES)}"
        assert (state["type"], state["message"]) == ("COMPLETED", message), state
        assert (work / "data" / "lists" / "classes.csv").is_file()  # the stages really ran, in the checkout

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)  # the UI bundle on a busy 2-core runner
            page.set_default_navigation_timeout(120_000)
            # 1. Deployments: both listed; nightly with its cron read out in words, in UTC; on-demand: none.
            page.goto(f"{base}/deployments")
            rows = page.get_by_role("row")
            nightly = rows.filter(has=page.get_by_role("link", name="nightly", exact=True))
            on_demand = rows.filter(has=page.get_by_role("link", name="on-demand", exact=True))
            badge = nightly.get_by_text(words, exact=True)
            badge.wait_for()
            on_demand.wait_for()
            assert nightly.get_by_text("Active", exact=True).count() == 1  # the schedule badge: active
            assert on_demand.get_by_text("Active", exact=True).count() == 0  # no schedule at all
            badge.hover()
            page.get_by_role("tooltip").filter(has_text=f"{words} ({zone})").first.wait_for()
            page.screenshot(path=str(shots / "prefect-deployments.png"))
            # 2. The nightly deployment's schedule holds the cron text itself (its edit form; nothing saved).
            page.goto(f"{base}/deployments/deployment/{deployments['nightly']['id']}")
            card = page.locator("[data-slot=card]").filter(has=page.get_by_text(words, exact=True))
            card.get_by_role("button", name="Open menu").click()
            page.get_by_role("menuitem", name="Edit").click()
            field = page.get_by_role("dialog").locator("input[name='schedule.cron']")
            field.wait_for()
            assert field.input_value() == cron
            page.keyboard.press("Escape")
            # 3. The flow run: one task run per stage, named after it, each completed.
            page.goto(f"{base}/runs/flow-run/{run['id']}?tab=TaskRuns")
            page.get_by_text(run["name"], exact=True).first.wait_for()
            page.get_by_text(f"{n} Task runs", exact=True).first.wait_for()
            for stage in UI_STAGES:
                task_run = page.locator("[data-slot=card]").filter(has=page.get_by_text(stage, exact=True))
                task_run.get_by_text("Completed", exact=True).wait_for()
            page.get_by_text(f"({n} Completed)").wait_for()
            page.wait_for_timeout(1500)  # let the run graph draw
            page.screenshot(path=str(shots / "prefect-flow-run.png"))
            # 4. Its logs, newest first: the flow run's final state with its message, after the summary.
            page.get_by_role("tab", name="Logs").click()
            page.get_by_role("combobox").filter(has_text="Oldest to newest").click()
            page.get_by_role("option", name="Newest to oldest").click()
            page.get_by_text(f"Finished in state Completed('{message}')").wait_for()
            page.get_by_text("pipeline summary:").wait_for()
            page.screenshot(path=str(shots / "prefect-flow-run-logs.png"))
            browser.close()
        nightly_runs = _api(f"{api}/flow_runs/filter", {"flow_runs": {"deployment_id": {
            "any_": [deployments["nightly"]["id"]]}}})
        assert nightly_runs == [], [(r["name"], r["state"]["type"]) for r in nightly_runs]  # its cron never fired
    finally:
        code = stop_group(serve, 90.0) if serve.poll() is None else serve.returncode
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert tree, "the Prefect server runs as child processes of `vidssl serve`"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.2)
    assert [p for p in tree if _alive(p)] == []
    assert _port_free(port)
    assert not (home / "server.json").exists()
    for name in ("prefect-deployments", "prefect-flow-run", "prefect-flow-run-logs"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name
