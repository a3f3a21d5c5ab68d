"""DVC stage `extract`: Decode every video into the frame store; resumable; quarantines bad files."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import flatten, load_params
    from vidssl.data.extract import raise_on_bad_input
    from vidssl.io import write_json
    from vidssl.pipeline.stages import run_extract
    from vidssl.pipeline.tracking import record_stage

    cfg = load_params()
    # The report inside the persisted store is what resume checks against; reports/ gets a copy with
    # per-video timings, which the store's manifest leaves out so that the store's DVC hash is reproducible.
    summary = run_extract(cfg, Path(cfg.data.raw_dir), Path("data/frames"), Path("data/frames/extract.json"),
                          reset_on_change=True, timings=False)
    write_json("reports/extract.json", summary)
    counts = {f"videos.{k}": v for k, v in summary.get("counts", {}).items() if isinstance(v, (int, float))}
    record_stage("extract", flatten({"extract": cfg.extract.model_dump(), "data": cfg.data.model_dump()}),
                 [Path("reports/extract.json")], counts)
    raise_on_bad_input(summary, cfg.extract.fail_on_bad_input, Path("reports/extract.json"))


if __name__ == "__main__":
    run_main(main)
