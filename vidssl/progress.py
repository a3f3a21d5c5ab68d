"""Progress of long loops: a tqdm bar with ETA on a terminal, plain log lines elsewhere (CI, files, DVC)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("vidssl.progress")


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts steps of one loop of ``total`` steps (from ``initial``, for a resumed loop).

    On a TTY it draws a tqdm bar; otherwise it logs ``desc i/total (p%), rate, ETA`` at most every
    ``every`` seconds, and with ``report_end`` once more when closed (a loop that has no summary line of its
    own). ``enabled=False`` (data-parallel ranks other than 0) shows nothing.
    """

    def __init__(self, total: int, desc: str, *, initial: int = 0, unit: str = "step", enabled: bool = True,
                 every: float = 30.0, tty: bool | None = None, report_end: bool = False) -> None:
        self.total, self.desc, self.n, self.unit = total, desc, initial, unit
        self.enabled, self.every, self.report_end = enabled, every, report_end
        self._t0 = self._last = time.monotonic()
        self._start = initial
        self._bar: Any = None
        tty = sys.stderr.isatty() if tty is None else tty
        if enabled and tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: float) -> None:
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every and self.n < self.total:
            self._last = now
            log.info("%s", self.line(now, postfix))

    def line(self, now: float | None = None, postfix: dict[str, float] | None = None) -> str:
        """The plain progress line: done/total, rate, elapsed and ETA."""
        now = time.monotonic() if now is None else now
        done = self.n - self._start
        rate = done / max(now - self._t0, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        extra = "".join(f" {k}={v:.4g}" for k, v in (postfix or {}).items())
        pct = 100 * self.n / max(self.total, 1)
        eta_s = _clock(eta) if eta != float("inf") else "?"
        return (f"{self.desc} {self.n}/{self.total} ({pct:.0f}%) {rate:.2f} {self.unit}/s "
                f"elapsed {_clock(now - self._t0)} ETA {eta_s}{extra}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.report_end and self.n > self._start:
            log.info("%s", self.line())
        self.report_end = False  # once
