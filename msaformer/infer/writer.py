"""Outputs of batch inference: one HDF5 file, its index CSV, and optional per-MSA side folders, all or nothing.

Everything is written under temporary names in the destination's folder and put in place together only when
the whole run succeeded (:class:`msaformer.files.OutputSet`), so a failed or interrupted run leaves a previous
output of the same name byte-identical and no half-written file behind.

A run over the same inputs with the same model file and the same options reuses what a previous complete
output already holds: each MSA group records the SHA-256 of the alignment it was computed from
(``input_hash``) and the root records a key of the model file and the options (``run_key``); a matching MSA is
copied from the previous file (with its plot and ranked CSV) instead of being computed again.

HDF5 layout (see ``docs/inference.md``): root attributes ``format``, ``format_version``, ``run_key``,
``checkpoint``, ``model_config`` (JSON), ``msaformer_version``, ``options`` (JSON); one group per MSA, named by
:class:`msaformer.data.inputs.UniqueNames`, with attributes ``name``, ``source``, ``input_hash``, ``depth``,
``rows_used``, ``length``, ``query`` and the datasets the run asked for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from msaformer.errors import MsaformerError
from msaformer.files import OutputSet, csv_text

FORMAT = "msaformer-embeddings"
FORMAT_VERSION = 1

#: Columns of the index CSV, in order.
INDEX_COLUMNS = ("name", "group", "source", "depth", "rows_used", "length", "status")


class ResultWriter:
    """Context manager writing one inference run; see the module docstring for the layout.

    Args:
        out: the HDF5 file to create (its folder must exist).
        index: the index CSV (default: ``out`` with suffix ``.csv``).
        root_attrs: root attributes; dicts and lists are stored as JSON strings.
        side_dirs: per-MSA folders to create, by key (e.g. ``{"plots": Path("results_plots")}``); write into
            ``writer.side[key].path(filename)``.
        run_key: what must match for a previous output's MSAs to be reused (model file and options).
    """

    def __init__(
        self,
        out: str | Path,
        index: str | Path | None = None,
        root_attrs: dict[str, Any] | None = None,
        side_dirs: dict[str, Path] | None = None,
        run_key: str = "",
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
        self.run_key = run_key
        self._side_spec = dict(side_dirs or {})
        self.side: dict[str, Any] = {}
        self._rows: list[tuple[int, dict[str, Any]]] = []
        self._outputs: OutputSet | None = None
        self._h5 = None
        self._previous = None  # the previous output, when its MSAs can be reused
        self._previous_groups: dict[tuple[str, str], str] = {}
        self.reused = 0

    def __enter__(self) -> ResultWriter:
        import h5py

        self._outputs = OutputSet()
        try:
            self._open_previous()
            self._h5 = h5py.File(self._outputs.file(self.out), "w")
            self._h5.attrs["format"] = FORMAT
            self._h5.attrs["format_version"] = FORMAT_VERSION
            self._h5.attrs["run_key"] = self.run_key
            for key, value in self.root_attrs.items():
                self._h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
            self.side = {key: self._outputs.folder(path) for key, path in self._side_spec.items()}
        except BaseException:
            self._close_previous()
            self._outputs.abort()
            raise
        return self

    def _open_previous(self) -> None:
        """Opens the previous output if it was made by the same model file with the same options."""
        import h5py

        if not self.run_key or not self.out.is_file():
            return
        try:
            h5 = h5py.File(self.out, "r")
        except OSError:
            return  # not an HDF5 file (or damaged): it is simply replaced
        try:
            if h5.attrs.get("format") != FORMAT or h5.attrs.get("run_key") != self.run_key:
                h5.close()
                return
            for name, group in h5.items():
                key = (str(group.attrs.get("source", "")), str(group.attrs.get("input_hash", "")))
                if key[1]:
                    self._previous_groups[key] = name
        except (OSError, KeyError, ValueError):
            h5.close()
            self._previous_groups = {}
            return
        self._previous = h5

    def _close_previous(self) -> None:
        if self._previous is not None:
            try:
                self._previous.close()
            finally:
                self._previous = None

    def can_reuse(self, source: str, input_hash: str) -> bool:
        """Returns whether the previous output holds this alignment, computed with the same model and options."""
        return (source, input_hash) in self._previous_groups

    def reuse(self, source: str, input_hash: str, group: str) -> dict[str, Any]:
        """Copies the previous output's group of this alignment (and its side files) under ``group``; returns
        the group's attributes."""
        old = self._previous_groups[(source, input_hash)]
        self._previous.copy(self._previous[old], self._h5, name=group)
        for key, folder in self.side.items():
            previous_folder = self._side_spec[key]
            for suffix in (".png", ".csv"):
                found = previous_folder / f"{old}{suffix}"
                if found.is_file():
                    shutil.copyfile(found, folder.path(f"{group}{suffix}"))
        self.reused += 1
        return dict(self._h5[group].attrs)

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
        outputs = self._outputs
        try:
            if h5 is not None:
                h5.attrs["n_records"] = sum(1 for _, r in self._rows if r["status"] == "ok")
                h5.close()
        finally:
            self._close_previous()
            if exc_type is not None:
                outputs.abort()
                return
        try:
            text = csv_text(INDEX_COLUMNS, ([row[c] for c in INDEX_COLUMNS] for row in self.index_rows()))
            outputs.file(self.index).write_text(text, encoding="utf-8")
        except BaseException:
            outputs.abort()
            raise
        outputs.commit()


def previous_run_keys(out: str | Path, run_key: str) -> set[tuple[str, str]]:
    """Returns the ``(source, input_hash)`` of every MSA a previous complete output at ``out`` holds, when it
    was made with the same ``run_key`` (the MSAs a new run reuses; see :meth:`ResultWriter.can_reuse`)."""
    import h5py

    out = Path(out)
    if not run_key or not out.is_file():
        return set()
    try:
        with h5py.File(out, "r") as h5:
            if h5.attrs.get("format") != FORMAT or h5.attrs.get("run_key") != run_key:
                return set()
            keys = set()
            for group in h5.values():
                key = (str(group.attrs.get("source", "")), str(group.attrs.get("input_hash", "")))
                if key[1]:
                    keys.add(key)
            return keys
    except (OSError, KeyError, ValueError):
        return set()
