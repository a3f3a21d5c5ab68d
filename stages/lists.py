"""DVC stage `lists`: CSV lists (pretrain/train/val/test) from the official split files and the frame store."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import flatten, load_params
    from vidssl.data.lists import MissingVideosError
    from vidssl.pipeline.stages import run_lists
    from vidssl.pipeline.tracking import record_stage

    cfg = load_params()
    out = Path("data/lists")
    params = flatten({"lists": cfg.lists.model_dump(), "data": cfg.data.model_dump(), "seed": cfg.seed})
    try:
        summary = run_lists(cfg, Path("data/frames"), Path(cfg.data.split_dir), out)
    except MissingVideosError:  # lists.json names every missing video: it goes to MLflow too, then the stage fails
        record_stage("lists", params, [out / "lists.json"], failed=True)
        raise
    counts = {f"videos.{k}": v for k, v in summary["counts"].items()}
    record_stage("lists", params, [out / "lists.json"], {**counts, "videos.missing": summary["missing"]["count"]})


if __name__ == "__main__":
    run_main(main)
