"""Process entry helpers shared by the CLI and the DVC stages: logging and readable failures."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

# Expected failures are shown as one readable message, not a traceback: they name the file, key or value.
# ConnectionError: a service the run needs (e.g. the MLflow tracking server) does not answer; the message names it.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, ConnectionError)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("alembic", "mlflow", "urllib3", "filelock", "great_expectations", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_telemetry() -> None:
    """Analytics off for every tool we drive (the machines here are offline, and users did not opt in)."""
    for key, value in {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}.items():
        os.environ.setdefault(key, value)


def run_main(fn: Callable[[], Any]) -> None:
    """Run ``fn`` as a program: set up logging, print expected errors plainly, exit non-zero on failure."""
    setup_logging()
    quiet_telemetry()
    try:
        fn()
    except RuntimeError as err:
        code = getattr(err, "exit_code", None)  # e.g. a busy workspace: 75, try again later
        if code is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(code)
    except _USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes", file=sys.stderr)
        sys.exit(130)
