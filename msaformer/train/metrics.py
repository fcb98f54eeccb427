"""Training metrics: one line per logged step on stderr, ``metrics.csv`` in the run directory, TensorBoard if
installed; and a tokens-per-second meter."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from msaformer.files import atomic_write


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


class MetricsLogger:
    """Logs metrics to a rich console line (stderr), ``metrics.csv`` and TensorBoard (if installed).

    Only rank 0 writes. ``metrics.csv`` has one row per logged (step, split): training rows carry plain
    names (``step``, ``loss``, ``accuracy``, ...); rows of another split carry prefixed names (``val_loss``).
    A new column appearing later rewrites the header. With ``start_step`` (a resumed run), rows after that
    step, left by the interrupted run, are dropped so the file reads as one continuous run.
    """

    def __init__(self, run_dir: str | Path, rank: int = 0, *, start_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.path = self.run_dir / "metrics.csv"
        self._columns: list[str] = []
        self._rows: list[dict] = []
        self._tb = None
        if rank != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                self._columns = list(reader.fieldnames or [])
                self._rows = [r for r in reader if start_step is None or int(float(r["step"])) <= start_step]
            self._rewrite()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        except Exception:  # tensorboard not installed: CSV and console only
            self._tb = None

    def _rewrite(self) -> None:
        with atomic_write(self.path) as fh:
            writer = csv.DictWriter(fh, fieldnames=self._columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(self._rows)

    def log(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Writes one row of ``metrics`` for ``step``; a no-op on ranks other than 0."""
        if self.rank != 0:
            return
        prefix = "" if split == "train" else f"{split}_"
        row = {"step": int(step), "split": split}
        for key, value in metrics.items():
            row[prefix + key] = float(value) if not isinstance(value, int) else value
        new = [k for k in row if k not in self._columns]
        self._rows.append(row)
        if new:
            self._columns.extend(new)
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as fh:  # appending a whole line: a crash keeps the rows before
                csv.DictWriter(fh, fieldnames=self._columns, extrasaction="ignore", lineterminator="\n").writerow(row)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{split}/{key}", value, step)
        from rich.console import Console

        text = "  ".join(f"{k} {_format_value(v)}" for k, v in metrics.items())
        Console(stderr=True).print(f"[bold]{split}[/] step {step:>6d}  {text}", highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


class Throughput:
    """Tokens per second between calls of :meth:`rate`."""

    def __init__(self) -> None:
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, tokens: int) -> None:
        self.tokens += int(tokens)

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.tokens / max(now - self.start, 1e-9)
        self.tokens, self.start = 0, now
        return value
