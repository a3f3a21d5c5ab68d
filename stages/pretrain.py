"""DVC stage `pretrain`: Self-supervised pretraining; per-epoch checkpoints in the persisted models/pretrain_state."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import load_params
    from vidssl.pipeline.stages import run_pretrain

    run_pretrain(load_params(), Path("data/lists"), Path("models/pretrain"), Path("models/pretrain_state"),
                 Path("metrics/pretrain.json"), Path("plots"))


if __name__ == "__main__":
    run_main(main)
