"""DVC stage `finetune`: Fine-tune the pretrained backbone (and, as a baseline, the same backbone from random init)."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import load_params
    from vidssl.pipeline.stages import run_finetune

    cfg = load_params()
    run_finetune(cfg, Path("data/lists"), Path("models/pretrain/backbone.pt"), Path("models/finetune"),
                 Path("models/finetune_state"), Path("metrics/finetune.json"), Path("plots"),
                 baseline=cfg.finetune.baseline)


if __name__ == "__main__":
    run_main(main)
