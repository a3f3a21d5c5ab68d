"""DVC stage `evaluate`: Summary metrics for `dvc metrics show` and the Markdown results table."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import load_params
    from vidssl.pipeline.stages import run_evaluate

    print(run_evaluate(load_params(), Path("metrics"), Path("reports/results.md"), Path("metrics/summary.json")))


if __name__ == "__main__":
    run_main(main)
