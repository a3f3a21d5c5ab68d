"""DVC stage `retrieve`: Video retrieval (test queries train), random init vs pretrained; features saved."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import load_params
    from vidssl.pipeline.stages import run_retrieve

    run_retrieve(load_params(), Path("data/lists"), Path("models/pretrain/backbone.pt"), Path("features"),
                 Path("metrics/retrieve.json"), Path("plots"))


if __name__ == "__main__":
    run_main(main)
