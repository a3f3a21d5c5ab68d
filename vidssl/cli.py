"""The `vidssl` command line. Each command parses its arguments and delegates to vidssl.pipeline.stages / the library.

Heavy libraries (torch, mlflow, prefect, great_expectations) are imported inside commands so that
`vidssl --help` answers at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from vidssl.entry import DEBUG_ENV, exit_codes_text, guard, quiet_telemetry, run_main


class _App(typer.Typer):
    """The typer app, run so that any failure outside a command's own handling is one readable line too."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return guard(lambda: super(_App, self).__call__(*args, **kwargs))


app = _App(help="Self-supervised video representation learning, reproducibly.", no_args_is_help=True,
           add_completion=False, pretty_exceptions_enable=False,
           epilog="\b\nExit codes (also in docs/operations.md):\n" + exit_codes_text())

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="params file (typed; unknown keys are errors)")
_STATE = {"defaults": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help=f"show the traceback of a failure (or {DEBUG_ENV}=1)"),
          defaults: bool = typer.Option(False, "--defaults", help="keys the params file leaves out (or the whole "
                                        "file, if there is none) take the built-in defaults")) -> None:
    """Self-supervised video representation learning, reproducibly."""
    import os

    if debug:
        os.environ[DEBUG_ENV] = "1"  # also reaches stages run as subprocesses
    _STATE["defaults"] = defaults


def _cfg(path: Path, any_split: bool = False, **overrides: dict) -> "object":
    """The params of ``path``, with command-line options (``overrides``: section -> key -> value or None) on top;
    one official split unless ``any_split`` (``data.split: all`` is for `vidssl pipeline` only)."""
    from vidssl.config import one_split, resolve_params

    over = {section: {k: v for k, v in values.items() if v is not None} for section, values in overrides.items()}
    over = {k: v for k, v in over.items() if v}
    cfg = resolve_params(path, defaults=_STATE["defaults"], overrides=[("command-line options", over)]).params
    return cfg if any_split else one_split(cfg, str(path))


@app.command()
def synth(out: Path = typer.Argument(..., help="output folder (videos/ and splits/ go inside)"),
          seed: Optional[int] = typer.Option(None, help="dataset seed"),
          scale: Optional[float] = typer.Option(None, help="grows videos per class"),
          appearances: Optional[int] = typer.Option(None, help="0: a look per video; N: N looks shared by all"),
          workers: int = typer.Option(2, help="parallel encoders"), params: Path = PARAMS) -> None:
    """Write the embedded MotionShapes dataset as H.264 videos plus UCF101-format split files."""
    from vidssl.pipeline.stages import run_synth

    def go() -> None:
        cfg = _cfg(params, synth={"seed": seed, "scale": scale, "appearances": appearances})
        typer.echo(f"wrote {run_synth(cfg, out, workers)['n_videos']} videos to {out}")
    run_main(go)


@app.command()
def extract(src: Path = typer.Argument(..., help="class-folder videos: SRC/<class>/<video>.{avi,mp4,mkv,webm}"),
            out: Path = typer.Argument(..., help="frame store root"),
            short_side: Optional[int] = typer.Option(None, help="shorter side in pixels (0 = native)"),
            fps: Optional[float] = typer.Option(None, help="frame rate (0 = native)"),
            workers: Optional[int] = typer.Option(None, help="videos decoded in parallel"),
            report: Optional[Path] = typer.Option(None, help="JSON report path (default OUT/extract.json)"),
            dask: Optional[str] = typer.Option(
                None, help="Dask scheduler address (tcp://host:8786): fan videos out over its workers via Prefect; "
                           "SRC and OUT on a shared filesystem, PREFECT_API_URL set here and on the workers"),
            fail_on_bad_input: Optional[bool] = typer.Option(
                None, "--fail-on-bad-input/--allow-bad-input",
                help="exit 3 when any video was quarantined (default: extract.fail_on_bad_input)"),
            params: Path = PARAMS) -> None:
    """Decode every video into one ZIP of JPEG frames per video; resumable; bad files are quarantined.

    Exit codes: 0 done; 3 videos quarantined and --fail-on-bad-input; 74 a machine fault (disk full, permissions,
    open-file limit, read-only store: nothing quarantined, rerun resumes); 2 a bad argument."""
    from vidssl.data.extract import raise_on_bad_input
    from vidssl.pipeline.stages import run_extract

    def go() -> None:
        cfg = _cfg(params, extract={"short_side": short_side, "fps": fps, "workers": workers,
                                    "fail_on_bad_input": fail_on_bad_input})
        rep = report or out / "extract.json"
        result = run_extract(cfg, src, out, rep, dask=dask)
        typer.echo(f"extract: {result['counts']}")
        raise_on_bad_input(result, cfg.extract.fail_on_bad_input, rep)
    run_main(go)


@app.command(name="check-videos")
def check_videos_cmd(src: Path = typer.Argument(..., help="class-folder videos: SRC/<class>/<video>.{avi,mp4,mkv,webm}"),
                     report: Path = typer.Option(Path("reports/check_videos.json"),
                                                 help="JSON report; quarantine.csv is written beside it"),
                     workers: Optional[int] = typer.Option(None, help="videos probed in parallel"),
                     params: Path = PARAMS) -> None:
    """Decode every video once, in parallel, and list the ones extract would quarantine, each with its reason.

    Thresholds come from params (extract.min_bytes, min_frames, max_pixels; the frame-rate range from the data
    gate's checks.min_fps and checks.max_fps). Exit 0 when every video is good,
    3 when some would be quarantined (named in quarantine.csv), 74 on a machine fault."""
    from vidssl.data.extract import BadInputError
    from vidssl.data.probe import check_videos

    def go() -> None:
        cfg = _cfg(params, extract={"workers": workers})
        e = cfg.extract
        result = check_videos(src, report, workers=e.workers, min_bytes=e.min_bytes, min_frames=e.min_frames,
                              max_pixels=e.max_pixels, fps_range=(cfg.checks.min_fps, cfg.checks.max_fps))
        typer.echo(f"check-videos: {result['n_videos']} videos, {result['n_quarantined']} to quarantine, "
                   f"{result['n_warnings']} with warnings; report {report}")
        if result["n_quarantined"]:
            first = next(v for v in result["videos"] if v["reason"])
            raise BadInputError(f"{result['n_quarantined']} video(s) would be quarantined, e.g. {first['video']}: "
                                f"{first['reason']}; all in {report.parent / 'quarantine.csv'}")
    run_main(go)


@app.command(name="import-frames")
def import_frames(src: Path = typer.Argument(..., help="pre-extracted frames: SRC/<class>/<video>/img_00001.jpg"),
                  out: Path = typer.Argument(..., help="frame store root"),
                  report: Optional[Path] = typer.Option(None, help="JSON report path (default OUT/extract.json)"),
                  params: Path = PARAMS) -> None:
    """Pack pre-extracted JPEG frame folders (img_00001.jpg, image_0001.jpg, frame000.jpg, ...) into the frame store.

    Frames go in numeric order with their bytes copied (no re-encoding); optical-flow files beside them are left
    out; a gap in the numbering is reported. Resumable, like extract."""
    from vidssl.data.extract import extract_videos

    def go() -> None:
        e = _cfg(params).extract
        result = extract_videos(src, out, short_side=e.short_side, fps=e.fps, workers=e.workers, quality=e.quality,
                                report=report or out / "extract.json", frames_only=True, min_frames=e.min_frames)
        gaps = sum(bool(r["warnings"]) for r in result["videos"])
        typer.echo(f"import-frames: {result['counts']}" + (f"; {gaps} with gaps in their numbering" if gaps else ""))
    run_main(go)


@app.command()
def lists(frames: Path = typer.Argument(..., help="frame store root"),
          split_dir: Path = typer.Argument(..., help="official split files folder"),
          out: Path = typer.Argument(..., help="output folder for the CSV lists"),
          split: Optional[int] = typer.Option(None, help="official split number (1-3)"),
          dataset: Optional[str] = typer.Option(None, help="synthetic | ucf101 | hmdb51 | kinetics400 | diving48 | folders"),
          val_videos: Optional[int] = typer.Option(None, help="train videos held out for validation"),
          params: Path = PARAMS) -> None:
    """Write pretrain/train/val/test CSV lists from official split files and the frame store."""
    from vidssl.pipeline.stages import run_lists

    def go() -> None:
        cfg = _cfg(params, data={"split": split, "dataset": dataset}, lists={"val_videos": val_videos})
        typer.echo(f"lists: {run_lists(cfg, frames, split_dir, out)['counts']}")
    run_main(go)


@app.command()
def validate(lists_dir: Path = typer.Argument(Path("data/lists"), help="folder of CSV lists"),
             report_dir: Path = typer.Option(Path("reports"), help="where validation.{json,md} go"),
             params: Path = PARAMS) -> None:
    """Gate the lists and frame store with a great-expectations suite; fails with the offending rows."""
    from vidssl.pipeline.stages import run_validate

    run_main(lambda: (run_validate(_cfg(params), lists_dir, report_dir), typer.echo("validation passed")))


@app.command()
def pretrain(lists_dir: Path = typer.Argument(Path("data/lists")),
             out: Path = typer.Argument(Path("models/pretrain")),
             state: Path = typer.Option(Path("models/pretrain_state"), help="per-epoch checkpoints (resume)"),
             metrics: Path = typer.Option(Path("metrics/pretrain.json")),
             plots: Path = typer.Option(Path("plots")), params: Path = PARAMS) -> None:
    """Self-supervised pretraining of params' backbone with params' method; resumes from STATE.

    Data-parallel when started by torchrun: torchrun --nproc-per-node N -m vidssl.cli pretrain ...
    """
    from vidssl.pipeline.stages import run_pretrain

    run_main(lambda: run_pretrain(_cfg(params), lists_dir, out, state, metrics, plots))


@app.command()
def finetune(lists_dir: Path = typer.Argument(Path("data/lists")),
             out: Path = typer.Argument(Path("models/finetune")),
             init: Optional[Path] = typer.Option(Path("models/pretrain/backbone.pt"), help="pretrained backbone"),
             state: Path = typer.Option(Path("models/finetune_state")),
             metrics: Path = typer.Option(Path("metrics/finetune.json")),
             plots: Path = typer.Option(Path("plots")), params: Path = PARAMS) -> None:
    """Fine-tune backbone + linear head; video accuracy is the mean over clips."""
    from vidssl.pipeline.stages import run_finetune

    def go() -> None:
        cfg = _cfg(params)
        out_ = run_finetune(cfg, lists_dir, init, out, state, metrics, plots, baseline=cfg.finetune.baseline)
        typer.echo({k: round(v["test_accuracy"], 4) for k, v in out_.items()})
    run_main(go)


@app.command()
def retrieve(lists_dir: Path = typer.Argument(Path("data/lists")),
             weights: Path = typer.Option(Path("models/pretrain/backbone.pt"), help="pretrained backbone"),
             features: Path = typer.Option(Path("features")), metrics: Path = typer.Option(Path("metrics/retrieve.json")),
             plots: Path = typer.Option(Path("plots"), help="folder for the top-k curve, t-SNE and examples"),
             params: Path = PARAMS) -> None:
    """Nearest-neighbour retrieval (test queries train), random init vs pretrained."""
    from vidssl.pipeline.stages import run_retrieve

    run_main(lambda: typer.echo(run_retrieve(_cfg(params), lists_dir, weights, features, metrics, plots)))


@app.command()
def diagnose(lists_dir: Path = typer.Argument(Path("data/lists")),
             weights: Optional[Path] = typer.Option(Path("models/pretrain/backbone.pt"),
                                                    help="pretrained backbone ('none': random init)"),
             classifier: Path = typer.Option(Path("models/finetune/pretrained/classifier.pt"),
                                             help="fine-tuned classifier (skipped when absent)"),
             synth_json: Path = typer.Option(Path("data/raw/synth.json"),
                                             help="MotionShapes summary, for the background gap (skipped when absent)"),
             report: Path = typer.Option(Path("reports/diagnose.md")),
             metrics: Path = typer.Option(Path("metrics/diagnose.json")), params: Path = PARAMS) -> None:
    """What the model uses: accuracy on shuffled, reversed and frozen test clips; background-bias gap."""
    from vidssl.pipeline.stages import run_diagnose

    w = None if weights is None or str(weights) == "none" else weights

    def go() -> None:
        run_diagnose(_cfg(params), lists_dir, w, classifier, synth_json, report, metrics)
        typer.echo(report.read_text())

    run_main(go)


@app.command()
def report(out: Path = typer.Option(Path("reports/paper.md"), help="Markdown table (the HTML goes beside it)"),
           root: Path = typer.Option(Path("."), help="workspace whose MLflow store is read"),
           methods: Path = typer.Option(Path("reports/methods.json"),
                                        help="stored `vidssl methods-report` results: their view is written "
                                             "beside them as .md and .html (skipped when the file is absent)")) -> None:
    """Paper-style table (method x backbone x dataset x protocol) from the tracked runs, published numbers beside;
    and the methods report (reports/methods.md, .html), a view of the results methods-report stored."""
    from vidssl.pipeline.paper_table import run_report

    def go() -> None:
        typer.echo(run_report(root, out, out.with_suffix(".html"), methods if methods.is_file() else None))
        if methods.is_file():
            typer.echo(f"methods report: {methods.with_suffix('.md')} and {methods.with_suffix('.html')} from {methods}")
    run_main(go)


@app.command()
def evaluate(metrics_dir: Path = typer.Option(Path("metrics")), report: Path = typer.Option(Path("reports/results.md")),
             summary: Path = typer.Option(Path("metrics/summary.json")), params: Path = PARAMS) -> None:
    """Summarise stage metrics into metrics/summary.json and reports/results.md."""
    from vidssl.pipeline.stages import run_evaluate

    run_main(lambda: typer.echo(run_evaluate(_cfg(params), metrics_dir, report, summary)))


@app.command()
def pipeline(force: bool = typer.Option(False, help="rerun every stage"),
             stages: Optional[str] = typer.Option(None, help="comma-separated stage names"),
             wait: float = typer.Option(0.0, help="seconds to wait for a workspace another run holds "
                                        "(0: refuse at once, exit 75; -1: no limit)")) -> None:
    """Run the whole DVC pipeline as a Prefect flow (flows/pipeline.py), from the repository root.

    Reports to the Prefect server in PREFECT_API_URL, else to the one `vidssl serve` runs for this workspace,
    else to a temporary local one.
    """
    quiet_telemetry()
    flow = Path("flows/pipeline.py")
    if not flow.is_file():
        typer.echo(f"error: {flow} not found; run `vidssl pipeline` from the repository root", err=True)
        raise typer.Exit(2)
    cmd = [sys.executable, str(flow), "--repo", ".", "--wait", str(wait)] + (["--force"] if force else []) + \
        (["--stages", stages] if stages else [])
    sys.stdout.flush()
    os.execv(sys.executable, cmd)  # the flow is this process: a signal to `vidssl pipeline` reaches it


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="address the Prefect server binds (ignored when "
                                   "PREFECT_API_URL names a server already running)"),
          port: int = typer.Option(4200, help="Prefect server port; the UI is http://HOST:PORT"),
          cron: str = typer.Option("0 2 * * *", help="schedule of the nightly deployment (cron syntax)"),
          timezone: str = typer.Option("UTC", help="time zone the cron is read in"),
          dry_run: bool = typer.Option(False, "--dry-run", help="print the deployments and exit")) -> None:
    """Register and serve this checkout's deployments (nightly on cron, on-demand) until Ctrl-C.

    Starts a Prefect server on HOST:PORT unless PREFECT_API_URL names one. State (the server's SQLite
    database, its log, the record that `vidssl pipeline` finds it by) lives in PREFECT_HOME, default
    ./.prefect of this checkout. Runs execute here, in this checkout. GPU workers on their own machines: see
    prefect.yaml and docs/operations.md.
    """
    quiet_telemetry()
    flow = Path("flows/deploy.py")
    if not flow.is_file():
        typer.echo(f"error: {flow} not found; run `vidssl serve` from the repository root", err=True)
        raise typer.Exit(2)
    cmd = [sys.executable, str(flow), "--host", host, "--port", str(port), "--cron", cron, "--timezone", timezone]
    sys.stdout.flush()
    # exec, not a child: Ctrl-C and SIGTERM reach the server's owner, which stops the whole tree
    os.execv(sys.executable, cmd + (["--dry-run"] if dry_run else []))


@app.command()
def ui(port: int = typer.Option(5000, help="port to listen on"),
       host: str = typer.Option("127.0.0.1", help="bind address (127.0.0.1: this machine only)"),
       store: Optional[str] = typer.Option(None, help="tracking store URI (default: $MLFLOW_TRACKING_URI, else "
                                           "sqlite:///<cwd>/mlruns/mlflow.db)")) -> None:
    """Browse runs in the MLflow UI at http://HOST:PORT (default http://127.0.0.1:5000).

    State lives in the tracking store: by default the sqlite database mlruns/mlflow.db of the current workspace,
    artifacts under mlruns/artifacts/. Ctrl-C (or SIGTERM) stops the UI and every process it started.
    """
    from vidssl.pipeline.servers import run_tree, ui_command
    from vidssl.pipeline.tracking import tracking_uri

    quiet_telemetry()
    uri = store or tracking_uri()
    if uri.startswith(("http://", "https://")):
        typer.echo(f"the tracking store is a server already; open {uri} in a browser")
        raise typer.Exit(0)
    typer.echo(f"MLflow UI at http://{host}:{port} (store {uri}); Ctrl-C stops it")
    raise typer.Exit(run_tree(ui_command(uri, host, port)))


@app.command()
def server(port: int = typer.Option(5000, help="port to listen on"),
           host: str = typer.Option("127.0.0.1", help="bind address; 0.0.0.0 serves other machines (put a proxy "
                                    "with authentication in front)"),
           backend: Optional[str] = typer.Option(None, help="where runs live: default sqlite:///<cwd>/mlruns/"
                                                 "mlflow.db; or postgresql://USER:PASSWORD@HOST:5432/DB (needs "
                                                 "`pip install psycopg2-binary`)"),
           artifacts: Optional[str] = typer.Option(None, help="artifact root the server stores uploads in: "
                                                   "default <cwd>/mlruns/server-artifacts; or s3://bucket/path"),
           workers: int = typer.Option(2, help="server worker processes")) -> None:
    """Run an MLflow tracking server at http://HOST:PORT (default http://127.0.0.1:5000) for shared tracking.

    State lives in the backend store (runs, metrics, model registry: sqlite file by default, PostgreSQL for a
    team) and the artifact root (checkpoints, plots, reports). Point runs at it with
    MLFLOW_TRACKING_URI=http://HOST:PORT. Ctrl-C (or SIGTERM) stops the server and all its workers.
    """
    from vidssl.pipeline.servers import run_tree, server_command, sqlite_uri

    quiet_telemetry()
    uri = backend or sqlite_uri(Path("mlruns") / "mlflow.db")
    store = artifacts or str((Path("mlruns") / "server-artifacts").resolve())
    typer.echo(f"MLflow tracking server at http://{host}:{port}: runs in {uri}, artifacts in {store}; "
               f"clients: export MLFLOW_TRACKING_URI=http://{host}:{port}")
    raise typer.Exit(run_tree(server_command(uri, store, host, port, workers)))


@app.command()
def models(name: Optional[str] = typer.Option(None, help="one registered model (default: all)"),
           store: Optional[str] = typer.Option(None, help="tracking store URI (default as for `vidssl ui`)")) -> None:
    """List registered backbone versions: aliases (champion, candidate), the chosen metric, commit, run."""
    from vidssl.pipeline.registry import list_versions
    from vidssl.pipeline.tracking import check_tracking, tracking_uri

    def go() -> None:
        import mlflow

        uri = store or tracking_uri()
        check_tracking(uri)
        rows = list_versions(mlflow.MlflowClient(uri, registry_uri=uri), name)
        if not rows:
            typer.echo(f"no registered models in {uri}; a pipeline run's evaluate stage registers one")
            return
        typer.echo(f"{'model':28s} {'ver':>4s}  {'aliases':20s} {'metric':28s} {'value':>8s}  {'commit':10s} run")
        for r in rows:
            typer.echo(f"{r['model']:28s} {r['version']:4d}  {','.join(r['aliases']) or '-':20s} "
                       f"{r['metric']:28s} {r['value']:>8s}  {r['commit']:10s} {r['run_id']}")
    run_main(go)


@app.command()
def backbones() -> None:
    """List the registered backbones with parameter counts."""
    from vidssl.models import describe_backbones

    for d in describe_backbones():
        typer.echo(f"{d['name']:8s} {d['params'] / 1e6:7.2f}M params  {d['out_dim']:5d}-d  {d.get('description', '')}")


@app.command()
def methods() -> None:
    """List the registered self-supervised methods."""
    from vidssl.methods.registry import METHODS

    for name, cls in METHODS.items():
        typer.echo(f"{name:10s} {(cls.__doc__ or '').strip().splitlines()[0]}")


@app.command(name="methods-report")
def methods_report(lists: Path = typer.Option(Path("data/lists"), help="lists folder from `vidssl lists`"),
                   work: Path = typer.Option(Path("models/methods"), help="per-method checkpoints and results"),
                   out: Path = typer.Option(Path("reports/methods.md"),
                                            help="Markdown report (results JSON and HTML beside it)"),
                   only: Optional[str] = typer.Option(None, "--methods",
                                                      help="comma-separated subset of report.methods"),
                   seeds: Optional[str] = typer.Option(None, help="comma-separated seeds (default report.seeds, "
                                                       "else seed): mean ± sd and per-seed paired verdicts"),
                   params: Path = PARAMS) -> None:
    """Random init vs every baseline and seed method on the same data: retrieval, fine-tune, wall time.

    Stores the results in OUT with .json; the Markdown and HTML are the view `vidssl report` also writes."""
    from vidssl.pipeline.report import run_methods_report

    names = [m.strip() for m in only.split(",") if m.strip()] if only else None

    def main() -> str:
        cfg = _cfg(params)
        if seeds:
            cfg = _with_seeds(cfg, seeds)
        return run_methods_report(cfg, lists, work, out, names)

    run_main(lambda: typer.echo(main()))


def _with_seeds(cfg: Any, text: str) -> Any:
    """``cfg`` with ``report.seeds`` from a comma-separated option, validated like params.yaml."""
    from vidssl.config import ConfigError, with_overrides

    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. --seeds 632,1,2") from None
    return with_overrides(cfg, {"report": {"seeds": values}}, "--seeds")


@app.command()
def plan(gpu_mem: float = typer.Option(80.0, "--gpu-mem", help="GiB of memory per GPU"),
         gpus: int = typer.Option(1, "--gpus", help="GPUs the global batch is spread over (torchrun)"),
         preset: Optional[str] = typer.Option(None, help="plan this presets/NAME.yaml over the params instead"),
         lists_dir: Path = typer.Option(Path("data/lists"), help="lists whose pretrain.csv counts the videos"),
         device: Optional[str] = typer.Option(None, help="measure on this device (default: cuda if present)"),
         params: Path = PARAMS) -> None:
    """Dry run: parameters, activation memory per sample (one measured forward/backward), the per-GPU batch and
    accumulation that fit --gpu-mem, and the optimiser steps of pretraining."""

    def go() -> None:
        import torch

        from vidssl.config import apply_preset, parse_params
        from vidssl.engine.plan import plan as make_plan

        cfg = _cfg(params, any_split=True)
        if preset:
            raw = apply_preset({**cfg.model_dump(), "preset": preset}, params.parent / "presets")
            cfg = parse_params(raw, f"{params} + preset {preset}")
        pre = lists_dir / "pretrain.csv"
        n = sum(1 for _ in pre.open(encoding="utf-8")) - 1 if pre.is_file() else None
        dev = torch.device(device) if device else None
        for line in make_plan(cfg, gpu_mem_gib=gpu_mem, world=gpus, dev=dev, n_videos=n).lines():
            typer.echo(line)
    run_main(go)


@app.command(name="check-params")
def check_params(params: Path = PARAMS) -> None:
    """Validate a params file and print it resolved."""
    import yaml

    run_main(lambda: typer.echo(yaml.safe_dump(_cfg(params, any_split=True).model_dump(), sort_keys=False)))


@app.command(name="params")
def params_cmd(show: bool = typer.Option(False, "--show", help="print every effective value and its source"),
               sets: list[str] = typer.Option([], "--set", "-S", help="override KEY=VALUE (YAML value), repeatable; "
                                              "as `dvc exp run -S`"),
               defaults: bool = typer.Option(False, "--defaults", help="keys left out take the built-in defaults"),
               params: Path = PARAMS) -> None:
    """Validate params in one pass; with --show, print the resolved params, each value with its source
    (default, the params file and line, the preset, or -S)."""
    from vidssl.config import parse_sets, resolve_params
    from vidssl.params_show import render_sources

    def go() -> None:
        resolved = resolve_params(params, defaults=defaults or _STATE["defaults"],
                                  overrides=[("-S", parse_sets(sets))])
        if show:
            typer.echo(render_sources(resolved))
        else:
            counts: dict[str, int] = {}
            for src in resolved.sources.values():
                kind = src.split(":")[0].split(" (")[0]
                counts[kind] = counts.get(kind, 0) + 1
            typer.echo(f"{params}: valid; " + ", ".join(f"{n} from {k}" for k, n in counts.items()))
    run_main(go)


if __name__ == "__main__":
    app()
