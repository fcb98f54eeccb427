"""The layout of a shard directory: file names, the HDF5 shard schema's constants, the Parquet index schemas.

A shard directory (``format_version`` 2) is written task by task; a task (a bounded slice of the inputs) owns
its files, which are named after it, so that a task run twice (retried after a worker died, or again by
``--resume``) replaces its own files and nothing else::

    OUT/shards.json                       the manifest: format, version, compression, options of the run
    OUT/tasks.json                        the order of the tasks (the input order of the runs that wrote them)
    OUT/msa-<task>-<k>.h5                 the task's shards (k = 0, 1, ... when it fills more than one)
    OUT/index/<task>.parquet              one row per record of the task's shards   (INDEX_SCHEMA)
    OUT/inputs/<task>.parquet             one row per input of the task             (INPUTS_SCHEMA)
    OUT/rejected.csv                      with --on-error skip: the rejected inputs and why
    OUT/.lock                             while a run writes into OUT

A task is committed when its ``inputs`` part exists: its shards are renamed into place first, then its index
part, then its inputs part, each atomically. Readers use the index parts of committed tasks only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from msaformer.errors import ShardError

FORMAT = "msaformer-msa"
#: Version of the HDF5 shard schema (unchanged since the first release).
FORMAT_VERSION = 1
DIRECTORY_FORMAT = "msaformer-shards"
#: Version of the directory layout (2: task-named shards and Parquet index parts).
DIRECTORY_VERSION = 2

MANIFEST_FILE = "shards.json"
ORDER_FILE = "tasks.json"
INDEX_DIR = "index"
INPUTS_DIR = "inputs"
LOCK_FILE = ".lock"
REJECTED_FILE = "rejected.csv"

#: Bytes per HDF5 chunk of ``tokens`` / ``deletions``: small enough that reading the first rows of a
#: record decompresses little more than it needs, large enough to deflate well.
CHUNK_BYTES = 1 << 16
#: Bytes per HDF5 chunk of ``row_names``.
NAMES_CHUNK_BYTES = 1 << 14
COMPRESSIONS = ("gzip", "none")
#: How every damaged-shard error ends.
REPAIR_HINT = "run msaformer preprocess --resume with the same inputs to re-parse it"

INDEX_COLUMNS = ("shard", "record", "name", "source", "input", "input_sha256", "n_seq", "n_res", "hash", "hash_key",
                 "aliases")
INPUTS_COLUMNS = ("input", "path", "input_sha256", "bytes", "mtime_ns", "n_records", "status", "reason")

_SHARD_RE = re.compile(r"^msa-([0-9a-f]{16})-(\d{3,})\.h5$")
_TASK_RE = re.compile(r"^[0-9a-f]{16}$")


def index_schema():
    """Returns the pyarrow schema of an index part."""
    import pyarrow as pa

    return pa.schema([
        ("shard", pa.string()), ("record", pa.int32()), ("name", pa.string()), ("source", pa.string()),
        ("input", pa.string()), ("input_sha256", pa.string()), ("n_seq", pa.int32()), ("n_res", pa.int32()),
        ("hash", pa.string()), ("hash_key", pa.uint64()), ("aliases", pa.list_(pa.string())),
    ])  # fmt: skip


def hash_key(content_hash: str) -> int:
    """Returns the first 64 bits of a hex content hash: the index's numeric stand-in for it (train / validation
    splits read it without holding any string)."""
    return int(content_hash[:16], 16)


def inputs_schema():
    """Returns the pyarrow schema of an inputs part."""
    import pyarrow as pa

    return pa.schema([
        ("input", pa.string()), ("path", pa.string()), ("input_sha256", pa.string()), ("bytes", pa.int64()),
        ("mtime_ns", pa.int64()), ("n_records", pa.int32()), ("status", pa.string()), ("reason", pa.string()),
    ])  # fmt: skip


def shard_name(task: str, k: int) -> str:
    """Returns the file name of shard ``k`` of task ``task``."""
    return f"msa-{task}-{k:03d}.h5"


def is_shard_name(name: str) -> bool:
    """Returns whether ``name`` is the file name of a shard (``msa-<task>-<k>.h5``)."""
    return _SHARD_RE.match(name) is not None


def task_of_shard(name: str) -> str | None:
    """Returns the task of a shard file name, or None."""
    match = _SHARD_RE.match(name)
    return match.group(1) if match else None


def is_task_id(name: str) -> bool:
    return _TASK_RE.match(name) is not None


def record_name(msa) -> str:
    """Returns a record's name: the first word of the query header, else the file name in ``source``."""
    header = msa.names[0].split(None, 1) if msa.names else []
    if header:
        return header[0]
    return os.path.basename(msa.source) or "query"


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """Returns the manifest of a shard directory, or None when it has none."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc}); re-run msaformer preprocess with --overwrite") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DIRECTORY_FORMAT:
        raise ShardError(f"{path}: not an msaformer shard directory manifest")
    version = manifest.get("format_version")
    if version != DIRECTORY_VERSION:
        raise ShardError(
            f"{path}: shard directory format_version {version!r} is not supported (this msaformer reads "
            f"{DIRECTORY_VERSION}); re-run msaformer preprocess --overwrite"
        )
    return manifest


def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    from msaformer.files import write_text

    payload = {"format": DIRECTORY_FORMAT, "format_version": DIRECTORY_VERSION, **manifest}
    write_text(Path(directory) / MANIFEST_FILE, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def committed_tasks(directory: str | os.PathLike) -> list[str]:
    """Returns the committed tasks of a shard directory (those with an inputs part), in the order of
    ``tasks.json`` (input order); tasks it does not list come last, sorted."""
    folder = Path(directory) / INPUTS_DIR
    if not folder.is_dir():
        return []
    done = {p.stem for p in folder.glob("*.parquet") if is_task_id(p.stem)}
    ordered = [t for t in read_task_order(directory) if t in done]
    return ordered + sorted(done.difference(ordered))


def read_task_order(directory: str | os.PathLike) -> list[str]:
    """Returns the task order recorded in ``tasks.json`` (empty when there is none or it is unreadable)."""
    try:
        order = json.loads((Path(directory) / ORDER_FILE).read_text(encoding="utf-8")).get("tasks", [])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return []
    return [t for t in order if isinstance(t, str) and is_task_id(t)]


def write_task_order(directory: str | os.PathLike, tasks: list[str]) -> None:
    from msaformer.files import write_text

    write_text(Path(directory) / ORDER_FILE, json.dumps({"tasks": tasks}) + "\n")
