"""DVC stage `validate`: Great-expectations gate over the lists and frame store; fails the pipeline on bad data."""

from pathlib import Path

from vidssl.entry import run_main


def main() -> None:
    # imported in main: run_main then reports a broken install in one line (exit 74)
    from vidssl.config import flatten, load_params
    from vidssl.data.checks import DataValidationError
    from vidssl.pipeline.stages import run_validate
    from vidssl.pipeline.tracking import record_stage

    cfg = load_params()
    reports = [Path("reports/validation.json"), Path("reports/validation.md")]
    params = flatten({"clip": cfg.clip.model_dump(), "checks": cfg.checks.model_dump()})
    try:
        run_validate(cfg, Path("data/lists"), Path("reports"), Path("data/frames"))
    except DataValidationError:  # bad data: the readable report goes to MLflow too, then the stage fails
        record_stage("validate", params, reports, failed=True)
        raise
    record_stage("validate", params, reports)


if __name__ == "__main__":
    run_main(main)
