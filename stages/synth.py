"""DVC stage `synth`: Embedded dataset: write MotionShapes videos + split files (only when data.dataset is synthetic)."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import flatten, load_params
    from vidssl.io import write_text
    from vidssl.pipeline.stages import run_synth
    from vidssl.pipeline.tracking import record_stage

    cfg = load_params()
    out = Path("data/raw")
    if cfg.data.dataset != "synthetic":
        # DVC stages are static: keep the declared output, but leave real datasets where params point.
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "README.txt", f"data.dataset is {cfg.data.dataset}; videos are read from {cfg.data.raw_dir}\n")
        return
    summary = run_synth(cfg, out)
    counts = {f"videos.{k[2:]}": summary[k] for k in ("n_videos", "n_train", "n_test")}
    record_stage("synth", flatten({"synth": cfg.synth.model_dump()}), [out / "synth.json"], counts)


if __name__ == "__main__":
    run_main(main)
