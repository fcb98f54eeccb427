"""Writing outputs so that they are never half-written, and reading small user files with one-line errors.

Every file msaformer writes goes through :func:`atomic_path` (or its helpers): the content is written to a
temporary name in the destination's own directory, flushed to disk (``fsync``), and renamed over the target
only when the writer finished without an exception. A failed or interrupted run (an error, Ctrl-C, ``kill -9``)
therefore leaves the previous output byte-identical and, after ``kill -9`` only, a hidden ``.NAME.tmp-PID``.
Folders of per-record files (plots, ranked CSVs, ensemble members) are built the same way by :func:`atomic_dir`
and swapped in at the end; building one first removes the ``.NAME.tmp-PID`` folders of the same name whose
process no longer runs on this machine (what a killed run left).

CSV files are written with ``\\n`` line ends on every platform (:data:`CSV_LINE_END`).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from msaformer.errors import MsaformerError

#: Line end of every CSV msaformer writes (the csv module's default is ``\r\n``, which breaks awk and cut).
CSV_LINE_END = "\n"


def file_sha256(path: str | os.PathLike) -> str:
    """Returns the SHA-256 (hex) of a file's bytes, read 16 MiB at a time."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_name(path: str | os.PathLike) -> Path:
    """Returns the hidden temporary name used while ``path`` is being written by this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _remove_stale_folders(final: Path) -> None:
    """Removes ``.NAME.tmp-PID`` folders beside ``final`` left by processes that no longer run."""
    prefix = f".{final.name}.tmp-"
    for tmp in final.parent.glob(f"{glob.escape(prefix)}*") if final.parent.is_dir() else ():
        pid = tmp.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and tmp.is_dir() and _process_is_gone(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise MsaformerError(f"{path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise MsaformerError(f"output folder does not exist: {path.parent} (create it first)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = False) -> Iterator[Path]:
    """Yields a temporary path to write ``path``'s new content to; renames it over ``path`` on success.

    For writers that take a file name (h5py, ``torch.save``, matplotlib). On an exception the temporary file is
    removed and ``path`` is untouched. ``make_parents`` creates missing parent folders first.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    _check_target(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if tmp.exists():
            _fsync_file(tmp)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, make_parents: bool = False) -> Iterator[Any]:
    """Yields an open file whose content replaces ``path`` when the block ends without an exception.

    ``mode`` is ``"w"`` (UTF-8 text, ``\\n`` newlines untranslated) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path, make_parents=make_parents) as tmp:
        if mode == "w":
            fh = open(tmp, "w", encoding="utf-8", newline="")
        else:
            fh = open(tmp, "wb")
        with fh:
            yield fh
            fh.flush()


def write_text(path: str | os.PathLike, text: str, *, make_parents: bool = False) -> None:
    """Replaces ``path`` with ``text`` atomically."""
    with atomic_write(path, make_parents=make_parents) as fh:
        fh.write(text)


def csv_writer(fh) -> Any:
    """Returns a ``csv.writer`` on ``fh`` that ends lines with ``\\n``."""
    return csv.writer(fh, lineterminator=CSV_LINE_END)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Returns the text of a CSV file (``\\n`` line ends)."""
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]], *,
              make_parents: bool = False) -> None:
    """Replaces ``path`` with a CSV file (a header and ``rows``) atomically."""
    with atomic_write(path, make_parents=make_parents) as fh:
        writer = csv_writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


class AtomicDir:
    """A folder of per-record files built under a temporary name and swapped in by :meth:`commit`.

    Write into ``path(filename)``; nothing is visible under the final name until :meth:`commit`, which replaces
    a previous folder of the same name in one rename. :meth:`abort` removes the temporary folder.
    """

    def __init__(self, final: str | os.PathLike) -> None:
        self.final = Path(final)
        if self.final.exists() and not self.final.is_dir():
            raise MsaformerError(f"{self.final} exists and is not a folder")
        self.tmp = temporary_name(self.final)
        _remove_stale_folders(self.final)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)

    def path(self, filename: str) -> Path:
        """Returns where to write ``filename`` inside the folder being built."""
        return self.tmp / filename

    def commit(self) -> None:
        """Puts the new folder in place of the old one (if any)."""
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        _fsync_dir(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Removes the folder being built; the old one stays."""
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[AtomicDir]:
    """Yields an :class:`AtomicDir` for ``path``, committed when the block ends without an exception."""
    folder = AtomicDir(path)
    try:
        yield folder
    except BaseException:
        folder.abort()
        raise
    folder.commit()


class OutputSet:
    """Several outputs of one command, committed together at the end (or none of them).

    ``file(path)`` returns a temporary path for one output file; ``folder(path)`` an :class:`AtomicDir`. On
    :meth:`commit` files are renamed into place first, then folders; on :meth:`abort` (or an exception in a
    ``with`` block) every temporary is removed and the previous outputs stay as they were.
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, Path]] = []
        self._folders: list[AtomicDir] = []

    def file(self, path: str | os.PathLike, *, make_parents: bool = False) -> Path:
        path = Path(path)
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        _check_target(path)
        tmp = temporary_name(path)
        tmp.unlink(missing_ok=True)
        self._files.append((tmp, path))
        return tmp

    def folder(self, path: str | os.PathLike) -> AtomicDir:
        folder = AtomicDir(path)
        self._folders.append(folder)
        return folder

    def commit(self) -> None:
        for tmp, path in self._files:
            if tmp.exists():
                _fsync_file(tmp)
                os.replace(tmp, path)
        for folder in self._folders:
            folder.commit()
        for parent in {path.parent for _, path in self._files}:
            _fsync_dir(parent)
        self._files, self._folders = [], []

    def abort(self) -> None:
        for tmp, _ in self._files:
            tmp.unlink(missing_ok=True)
        for folder in self._folders:
            folder.abort()
        self._files, self._folders = [], []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def read_user_text(path: str | os.PathLike, what: str, *, max_bytes: int = 64 << 20) -> str:
    """Returns the UTF-8 text of a small user file (a config, a label list); one-line errors otherwise.

    ``what`` names the file's role in messages ("config file", "mutations file"). A UTF-8 byte-order mark is
    dropped. Files over ``max_bytes`` are refused before they are read.
    """
    path = Path(path)
    if not path.exists():
        raise MsaformerError(f"{what} not found: {path}")
    if path.is_dir():
        raise MsaformerError(f"{what} {path} is a directory, not a file")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise MsaformerError(f"{what} {path} is {size / 1e6:.0f} MB; expected a small text file")
        data = path.read_bytes()
    except OSError as exc:
        raise MsaformerError(f"cannot read {what} {path} ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MsaformerError(
            f"{what} {path} is not a text file (byte {exc.start} is not UTF-8); give a text file"
        ) from None
