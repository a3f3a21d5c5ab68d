"""DVC stage `lists`: CSV lists (pretrain/train/val/test) from the official split files and the frame store."""

from pathlib import Path

from vidssl.config import load_params
from vidssl.entry import run_main
from vidssl.pipeline.stages import run_lists


def main() -> None:
    cfg = load_params()
    run_lists(cfg, Path("data/frames"), Path(cfg.data.split_dir), Path("data/lists"))


if __name__ == "__main__":
    run_main(main)
