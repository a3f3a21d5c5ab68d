"""DVC stage `lists`: CSV lists (pretrain/train/val/test) from the official split files and the frame store."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import load_params
    from vidssl.pipeline.stages import run_lists

    cfg = load_params()
    run_lists(cfg, Path("data/frames"), Path(cfg.data.split_dir), Path("data/lists"))


if __name__ == "__main__":
    run_main(main)
