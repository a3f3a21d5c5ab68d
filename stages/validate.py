"""DVC stage `validate`: Great-expectations gate over the lists and frame store; fails the pipeline on bad data."""

from pathlib import Path

from vidssl.config import load_params
from vidssl.entry import run_main
from vidssl.pipeline.stages import run_validate


def main() -> None:
    run_validate(load_params(), Path("data/lists"), Path("reports"), Path("data/frames"))


if __name__ == "__main__":
    run_main(main)
