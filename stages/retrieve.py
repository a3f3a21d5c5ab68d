"""DVC stage `retrieve`: Video retrieval (test queries train), random init vs pretrained; features saved."""

from pathlib import Path

from vidssl.config import load_params
from vidssl.entry import run_main
from vidssl.pipeline.stages import run_retrieve


def main() -> None:
    run_retrieve(load_params(), Path("data/lists"), Path("models/pretrain/backbone.pt"), Path("features"),
                 Path("metrics/retrieve.json"), Path("plots"))


if __name__ == "__main__":
    run_main(main)
