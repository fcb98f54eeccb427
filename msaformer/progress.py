"""Progress reporting: library functions report, the command line renders.

Long-running library functions take ``progress: ProgressCallback | None`` and call it with a
:class:`ProgressUpdate` as work gets done; they never print. ``msaformer.cli`` turns the updates into a progress
bar on stderr; tests and notebooks pass their own callback or nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProgressUpdate:
    """Where a long job stands.

    Attributes:
        label: what is being done ("preprocess", "embed", "predict").
        done: units finished so far.
        total: units in all, or None when unknown (streamed inputs).
        unit: what a unit is ("files", "MSAs", "sequences").
        detail: a short extra text for the bar ("1,204 records  98.2 MB/s", "3 failed").
    """

    label: str
    done: int
    total: int | None = None
    unit: str = ""
    detail: str = ""


ProgressCallback = Callable[[ProgressUpdate], None]


@dataclass
class Counter:
    """Counts units of one job and reports each change to ``callback`` (a no-op without one)."""

    label: str
    unit: str
    callback: ProgressCallback | None = None
    total: int | None = None
    done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def advance(self, n: int = 1, detail: str = "") -> None:
        """Adds ``n`` finished units and reports."""
        self.done += n
        self.report(detail)

    def report(self, detail: str = "") -> None:
        if self.callback is not None:
            self.callback(ProgressUpdate(self.label, self.done, self.total, self.unit, detail))

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


#: Set (to 1) by ``msaformer --verbose``: third-party log lines (DeepSpeed's) are then shown on stderr.
VERBOSE_ENV = "MSAFORMER_VERBOSE"


def verbose() -> bool:
    """Returns whether the user asked for third-party log output (``msaformer --verbose``)."""
    import os

    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")
