"""DVC stage `synth`: Embedded dataset: write MotionShapes videos + split files (only when data.dataset is synthetic)."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import load_params
    from vidssl.io import write_text
    from vidssl.pipeline.stages import run_synth

    cfg = load_params()
    out = Path("data/raw")
    if cfg.data.dataset != "synthetic":
        # DVC stages are static: keep the declared output, but leave real datasets where params point.
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "README.txt", f"data.dataset is {cfg.data.dataset}; videos are read from {cfg.data.raw_dir}\n")
        return
    run_synth(cfg, out)


if __name__ == "__main__":
    run_main(main)
