"""DVC stage `evaluate`: Summary metrics for `dvc metrics show` and the Markdown results table."""

from pathlib import Path

from vidssl.config import load_params
from vidssl.entry import run_main
from vidssl.pipeline.stages import run_evaluate


def main() -> None:
    print(run_evaluate(load_params(), Path("metrics"), Path("reports/results.md"), Path("metrics/summary.json")))


if __name__ == "__main__":
    run_main(main)
