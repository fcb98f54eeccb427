"""Atomic outputs of batch inference: one HDF5 file, its index CSV, and optional per-MSA side files.

Everything is written under temporary names in the destination directory and renamed into place only when
the whole run succeeded, so an interrupted or failed run never leaves a half-written ``results.h5``,
index or plot folder behind (a previous complete output of the same name is left untouched until then).

HDF5 layout (see ``docs/fragments/inference.md``): root attributes ``format``, ``format_version``,
``checkpoint``, ``model_config`` (JSON), ``msaformer_version``, ``options`` (JSON); one group per MSA, named
by :class:`msaformer.infer.inputs.UniqueNames`, with attributes ``name``, ``source``, ``depth``,
``rows_used``, ``length``, ``query`` and the datasets the run asked for.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from msaformer.errors import MsaformerError

FORMAT = "msaformer-embeddings"
FORMAT_VERSION = 1

#: Columns of the index CSV, in order.
INDEX_COLUMNS = ("name", "group", "source", "depth", "rows_used", "length", "status")


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _SideDir:
    """A folder of per-MSA files built under a temporary name and swapped in at the end."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = _tmp_name(final)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

    def path(self, filename: str) -> Path:
        return self.tmp / filename

    def commit(self) -> None:
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class ResultWriter:
    """Context manager writing one inference run; see the module docstring for the layout.

    Args:
        out: the HDF5 file to create (its folder must exist).
        index: the index CSV (default: ``out`` with suffix ``.csv``).
        root_attrs: root attributes; dicts and lists are stored as JSON strings.
        side_dirs: per-MSA folders to create, by key (e.g. ``{"plots": Path("results_plots")}``); write into
            ``writer.side[key].path(filename)``.
    """

    def __init__(
        self,
        out: str | Path,
        index: str | Path | None = None,
        root_attrs: dict[str, Any] | None = None,
        side_dirs: dict[str, Path] | None = None,
    ) -> None:
        self.out = Path(out)
        self.index = Path(index) if index is not None else self.out.with_suffix(".csv")
        if self.index.resolve() == self.out.resolve():
            raise MsaformerError(f"--index {self.index} would overwrite the HDF5 output; choose another name")
        for option, path in (("--out", self.out), ("--index", self.index)):
            if not path.parent.is_dir():
                raise MsaformerError(f"output folder does not exist: {path.parent} (create it first)")
            if path.is_dir():
                raise MsaformerError(f"{option} {path} is a directory; give a file name, e.g. {path / 'results.h5'}")
        self.root_attrs = dict(root_attrs or {})
        self._side_spec = dict(side_dirs or {})
        self.side: dict[str, _SideDir] = {}
        self._rows: list[tuple[int, dict[str, Any]]] = []
        self._h5 = None
        self._tmp = _tmp_name(self.out)

    def __enter__(self) -> ResultWriter:
        import h5py

        self._h5 = h5py.File(self._tmp, "w")
        self._h5.attrs["format"] = FORMAT
        self._h5.attrs["format_version"] = FORMAT_VERSION
        for key, value in self.root_attrs.items():
            self._h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
        self.side = {key: _SideDir(path) for key, path in self._side_spec.items()}
        return self

    def write(self, group: str, attrs: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Writes one MSA's group: ``attrs`` as attributes and ``arrays`` as float32/int datasets."""
        grp = self._h5.create_group(group)
        for key, value in attrs.items():
            grp.attrs[key] = value
        for key, value in arrays.items():
            grp.create_dataset(key, data=np.ascontiguousarray(value))

    def record(self, ordinal: int, row: dict[str, Any]) -> None:
        """Adds one index row (columns :data:`INDEX_COLUMNS`); rows are written sorted by ``ordinal``."""
        self._rows.append((ordinal, {col: row.get(col, "") for col in INDEX_COLUMNS}))

    def index_rows(self) -> list[dict[str, Any]]:
        """Returns the index rows recorded so far, in input order."""
        return [row for _, row in sorted(self._rows, key=lambda r: r[0])]

    def __exit__(self, exc_type, exc, tb) -> None:
        h5, self._h5 = self._h5, None
        try:
            if h5 is not None:
                h5.attrs["n_records"] = sum(1 for _, r in self._rows if r["status"] == "ok")
                h5.close()
        finally:
            if exc_type is not None:
                self._tmp.unlink(missing_ok=True)
                for side in self.side.values():
                    side.abort()
                return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(INDEX_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.index_rows())
        os.replace(self._tmp, self.out)
        for side in self.side.values():
            side.commit()
        atomic_write_text(self.index, buf.getvalue())
