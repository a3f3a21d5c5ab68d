"""DVC stage `pretrain`: Self-supervised pretraining; per-epoch checkpoints in the persisted models/pretrain_state."""

from pathlib import Path

from vidssl.config import load_params
from vidssl.entry import run_main
from vidssl.pipeline.stages import run_pretrain


def main() -> None:
    run_pretrain(load_params(), Path("data/lists"), Path("models/pretrain"), Path("models/pretrain_state"),
                 Path("metrics/pretrain.json"), Path("plots"))


if __name__ == "__main__":
    run_main(main)
