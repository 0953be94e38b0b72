"""A one-line progress bar on a terminal (our own: a few lines, no extra dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class Progress:
    """Steps done out of a total, redrawn in place on `stream`; silent unless it is a terminal.

    **Arguments:**

    - `total`: the number of steps of the run.
    - `stream`: where to draw (default `sys.stderr`).
    - `enabled`: draw at all (also requires a terminal).
    """

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled and self.stream.isatty()
        self.start = time.monotonic()
        self.drawn = False

    def update(self, done: int) -> None:
        """Show `done` steps finished."""
        if not self.enabled:
            return
        fraction = done / self.total if self.total else 1.0
        filled = round(fraction * _WIDTH)
        elapsed = time.monotonic() - self.start
        bar = "#" * filled + "." * (_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {fraction:4.0%} {done}/{self.total} steps {elapsed:5.1f} s")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """End the bar's line (if one was drawn)."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
