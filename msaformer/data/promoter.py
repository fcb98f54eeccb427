"""DNA promoter data: a one-token-per-nucleotide tokenizer, readers for GUE CSV / labelled FASTA / UCI
``promoters.data``, and length-bucketed batching.

Token ids (``DNA_TOKENS`` order): ``<cls>`` 0, ``<pad>`` 1, ``<mask>`` 2, ``<unk>`` 3, then A C G T N.
Lowercase is accepted; the IUPAC ambiguity codes R Y S W K M B D H V map to N. Any other character is an
error naming the record and the 1-based position: dropping it would shift every later position. The same holds
for whitespace inside a FASTA sequence line and for ``;`` comment lines inside a FASTA record (``;`` lines before
the first header are comments); a UTF-8 byte-order mark is accepted in every format.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msaformer.errors import MsaformerError

DNA_TOKENS = ("<cls>", "<pad>", "<mask>", "<unk>", "A", "C", "G", "T", "N")
CLS_IDX, PAD_IDX, MASK_IDX, UNK_IDX = 0, 1, 2, 3
NUCLEOTIDE_IDS = {"A": 4, "C": 5, "G": 6, "T": 7, "N": 8}
VOCAB_SIZE = len(DNA_TOKENS)
IUPAC_AMBIGUITY = "RYSWKMBDHV"

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".ffn")
CSV_SUFFIXES = (".csv", ".tsv")
UCI_SUFFIXES = (".data",)


class SequenceError(MsaformerError):
    """A promoter input file or record that cannot be read: bad character, missing column, bad label."""


def _build_lut() -> np.ndarray:
    lut = np.full(256, -1, dtype=np.int64)
    for letter, idx in NUCLEOTIDE_IDS.items():
        lut[ord(letter)] = lut[ord(letter.lower())] = idx
    for letter in IUPAC_AMBIGUITY:
        lut[ord(letter)] = lut[ord(letter.lower())] = NUCLEOTIDE_IDS["N"]
    return lut


_LUT = _build_lut()


def encode(sequence: str, *, record: str = "", source: str = "") -> np.ndarray:
    """Returns int64 token ids [L] of a nucleotide string (no ``<cls>``); raises on any invalid character."""
    raw = np.frombuffer(sequence.encode("latin-1", errors="replace"), dtype=np.uint8)
    ids = _LUT[raw]
    if ids.size and ids.min() < 0:
        pos = int(np.argmax(ids < 0))
        where = f"{source}: " if source else ""
        name = f"record {record!r}" if record else "sequence"
        raise SequenceError(
            f"{where}{name} has invalid character {sequence[pos]!r} at position {pos + 1}; "
            f"allowed: A C G T N, IUPAC codes {' '.join(IUPAC_AMBIGUITY)} (any case)"
        )
    return ids


def decode(ids: Iterable[int]) -> str:
    """Returns the letters of token ids (special tokens as their ``<name>``)."""
    return "".join(DNA_TOKENS[int(i)] for i in ids)


def collate(token_arrays: list[np.ndarray], pad_to: int | None = None) -> np.ndarray:
    """Returns int64 [B, 1 + max L] with ``<cls>`` prepended and ``<pad>`` after each sequence's end."""
    from msaformer.data.collate import pad_stack

    with_cls = [np.concatenate(([CLS_IDX], t)) for t in token_arrays] or [np.array([CLS_IDX])]
    out = pad_stack(with_cls, PAD_IDX, min_shape=(1 + (pad_to or 0),))
    return out[: len(token_arrays)]


@dataclass(frozen=True)
class PromoterSet:
    """Sequences read from one file: ids, nucleotide strings, labels (int64 0/1 or None when unlabelled)."""

    ids: list[str]
    sequences: list[str]
    labels: np.ndarray | None
    source: str = ""

    def __len__(self) -> int:
        return len(self.sequences)

    def tokens(self) -> list[np.ndarray]:
        """Returns the token ids of every sequence (validated; raises on the first bad character)."""
        return [encode(s, record=i, source=self.source) for i, s in zip(self.ids, self.sequences)]

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(s) for s in self.sequences), dtype=np.int64, count=len(self.sequences))

    def subset(self, index: np.ndarray) -> PromoterSet:
        labels = None if self.labels is None else self.labels[index]
        return PromoterSet(
            [self.ids[i] for i in index], [self.sequences[i] for i in index], labels, self.source
        )


# ------------------------------------------------------------------------------------------------ readers


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def detect_promoter_format(path: str | Path) -> str:
    """Returns "csv", "fasta" or "uci" from the file extension, else from the first non-empty line."""
    path = Path(path)
    suffix = _base_suffix(path)
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in FASTA_SUFFIXES:
        return "fasta"
    if suffix in UCI_SUFFIXES:
        return "uci"
    with _open_text(path) as handle:
        for line in handle:
            if line.strip():
                first = line.lstrip()
                if first.startswith(">"):
                    return "fasta"
                if first[0] in "+-" and first.count(",") >= 2:
                    return "uci"
                return "csv"
    raise SequenceError(f"{path}: file is empty")


def _parse_label(value: object, *, source: str, record: str) -> int:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "+", "true", "promoter", "pos", "positive"):
        return 1
    if text in ("0", "0.0", "-", "false", "non-promoter", "nonpromoter", "neg", "negative"):
        return 0
    raise SequenceError(f"{source}: record {record!r} has label {value!r}; expected 0/1 (or +/-)")


_SEQ_COLUMNS = ("sequence", "sequences", "seq", "seqs")
_LABEL_COLUMNS = ("label", "labels", "y", "class")
_ID_COLUMNS = ("id", "name", "ids", "names")


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lower = {c.strip().lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def read_csv(path: str | Path, *, require_labels: bool = False) -> PromoterSet:
    """Reads a CSV/TSV with a header naming ``sequence`` (or seq/seqs) and optionally ``label``, ``id``.

    Row ids default to ``<file stem>:<row number>`` (1-based data row) when there is no id column.
    """
    import pandas as pd

    path = Path(path)
    sep = "\t" if _base_suffix(path) == ".tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SequenceError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    columns = list(frame.columns)
    seq_col = _pick(columns, _SEQ_COLUMNS)
    if seq_col is None:
        raise SequenceError(f"{path}: no sequence column; found {columns}, expected one of {list(_SEQ_COLUMNS)}")
    label_col = _pick(columns, _LABEL_COLUMNS)
    if require_labels and label_col is None:
        raise SequenceError(f"{path}: no label column; found {columns}, expected one of {list(_LABEL_COLUMNS)}")
    id_col = _pick(columns, _ID_COLUMNS)
    sequences = [s.strip() for s in frame[seq_col].tolist()]
    ids = frame[id_col].tolist() if id_col else [f"{path.stem}:{i + 1}" for i in range(len(frame))]
    labels = None
    if label_col is not None:
        raw = frame[label_col].str.strip()
        fast = raw.map({"0": 0, "1": 1})
        if fast.isna().any():
            labels = np.array(
                [_parse_label(v, source=str(path), record=r) for v, r in zip(raw, ids)], dtype=np.int64
            )
        else:
            labels = fast.to_numpy(dtype=np.int64)
    for i, s in enumerate(sequences):
        if not s:
            raise SequenceError(f"{path}: record {ids[i]!r} (data row {i + 1}) has an empty sequence")
    return PromoterSet(ids, sequences, labels, str(path))


_WHITESPACE = re.compile(r"\s")


def iter_fasta(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """Yields ``(id, description, sequence)`` per FASTA record, streaming; sequence lines are joined.

    Whitespace at the ends of a line (``\\r``, trailing blanks) and blank lines are ignored; whitespace inside a
    sequence line, and ``;`` comment lines after the first header, are errors naming the record and position.
    A UTF-8 byte-order mark is accepted."""
    path = Path(path)
    header: str | None = None
    chunks: list[str] = []
    done = 0  # residues of the current record so far
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    yield _fasta_record(header, chunks, path)
                header, chunks, done = line[1:].strip(), [], 0
            elif line.startswith(";"):
                if header is not None:  # comments are allowed before the first record only
                    raise SequenceError(f"{path}: line {lineno}: a ';' comment line inside record "
                                        f"{header.split()[0]!r}; remove it (it is not sequence)")
            elif header is None:
                raise SequenceError(f"{path}: line {lineno} has sequence before the first '>' header")
            else:
                gap = _WHITESPACE.search(line)
                if gap is not None:  # dropping it would shift every later position
                    raise SequenceError(f"{path}: line {lineno}: record {header.split()[0]!r} has whitespace at "
                                        f"position {done + gap.start() + 1}")
                chunks.append(line)
                done += len(line)
    if header is not None:
        yield _fasta_record(header, chunks, path)


def _fasta_record(header: str, chunks: list[str], path: Path) -> tuple[str, str, str]:
    if not header:
        raise SequenceError(f"{path}: a record has an empty '>' header")
    name = header.split()[0]
    sequence = "".join(chunks)
    if not sequence:
        raise SequenceError(f"{path}: record {name!r} has an empty sequence")
    return name, header, sequence


_HEADER_LABEL = re.compile(r"(?:^|[\s|;])label[=:]\s*([^\s|;]+)", re.IGNORECASE)


def _header_label(name: str, header: str) -> str | None:
    """Returns the label text of a FASTA header: ``label=1`` anywhere, or a last ``|``-field of 0/1/+/-."""
    match = _HEADER_LABEL.search(header)
    if match:
        return match.group(1)
    last = name.rsplit("|", 1)
    if len(last) == 2 and last[1].strip().lower() in ("0", "1", "+", "-"):
        return last[1]
    return None


def read_label_file(path: str | Path) -> dict[str, int]:
    """Reads a side file of ``id,label`` (CSV or TSV, header optional) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"label file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    first = text.splitlines()[0] if text.strip() else ""
    dialect = "excel-tab" if "\t" in first else "excel"
    out: dict[str, int] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text), dialect=dialect), 1):
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise SequenceError(f"{path}: line {lineno} needs two fields id,label; found {row}")
        key, value = row[0].strip(), row[1].strip()
        if lineno == 1 and value.lower() in _LABEL_COLUMNS:
            continue
        out[key] = _parse_label(value, source=str(path), record=key)
    return out


def read_fasta(
    path: str | Path, *, labels: str | Path | dict[str, int] | None = None, require_labels: bool = False
) -> PromoterSet:
    """Reads FASTA; labels from a side file / dict (by record id) or from headers (``label=1`` or ``id|1``)."""
    path = Path(path)
    side = read_label_file(labels) if isinstance(labels, (str, Path)) else labels
    ids, sequences, found = [], [], []
    for name, header, sequence in iter_fasta(path):
        ids.append(name)
        sequences.append(sequence)
        if side is not None:
            if name not in side:
                raise SequenceError(f"{path}: record {name!r} has no label in the label file")
            found.append(side[name])
        else:
            text = _header_label(name, header)
            found.append(None if text is None else _parse_label(text, source=str(path), record=name))
    if not ids:
        raise SequenceError(f"{path}: no FASTA records found")
    have = [x is not None for x in found]
    if all(have):
        label_array = np.asarray(found, dtype=np.int64)
    elif any(have):
        missing = ids[have.index(False)]
        raise SequenceError(f"{path}: record {missing!r} has no label while others do (use label=0/1 in headers)")
    else:
        label_array = None
    if require_labels and label_array is None:
        raise SequenceError(f"{path}: no labels; put label=0/1 in each header or pass a label file (id,label)")
    return PromoterSet(ids, sequences, label_array, str(path))


def read_uci(path: str | Path) -> PromoterSet:
    """Reads the UCI "Molecular Biology (Promoter Gene Sequences)" file: ``+,NAME,<tabs>sequence`` per line."""
    path = Path(path)
    ids, sequences, labels = [], [], []
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            parts = line.split(",", 2)
            if len(parts) != 3:
                raise SequenceError(f"{path}: line {lineno} is not '+/-,name,sequence'")
            name = parts[1].strip()
            ids.append(name)
            labels.append(_parse_label(parts[0], source=str(path), record=name))
            sequences.append("".join(parts[2].split()))
    if not ids:
        raise SequenceError(f"{path}: no records found")
    return PromoterSet(ids, sequences, np.asarray(labels, dtype=np.int64), str(path))


def read_promoters(
    path: str | Path,
    *,
    fmt: str | None = None,
    labels: str | Path | None = None,
    require_labels: bool = False,
) -> PromoterSet:
    """Reads a promoter file of any supported format (``csv``, ``fasta``, ``uci``; None = detect)."""
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"input file not found: {path}")
    fmt = fmt or detect_promoter_format(path)
    if fmt == "csv":
        out = read_csv(path, require_labels=require_labels)
    elif fmt == "fasta":
        out = read_fasta(path, labels=labels, require_labels=require_labels)
    elif fmt == "uci":
        out = read_uci(path)
    else:
        raise SequenceError(f"{path}: unknown format {fmt!r}; use csv, fasta or uci")
    if labels is not None and fmt != "fasta":
        raise SequenceError(f"{path}: a label file is only used with FASTA input")
    return out


def iter_promoter_records(path: str | Path, *, fmt: str | None = None) -> Iterator[tuple[str, str]]:
    """Yields ``(id, sequence)`` from any supported file; FASTA is streamed record by record."""
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"input file not found: {path}")
    fmt = fmt or detect_promoter_format(path)
    if fmt == "fasta":
        for name, _, sequence in iter_fasta(path):
            yield name, sequence
        return
    data = read_promoters(path, fmt=fmt)
    yield from zip(data.ids, data.sequences)


# ---------------------------------------------------------------------------------------------- batching


def length_bucketed_batches(
    lengths: np.ndarray,
    batch_size: int,
    *,
    max_tokens: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> list[np.ndarray]:
    """Returns index arrays grouping sequences of similar length (little padding).

    Batches hold at most ``batch_size`` sequences and, if given, at most ``max_tokens`` padded tokens.
    With ``shuffle`` the order within equal lengths and the order of batches are randomised by ``seed``,
    so every epoch sees different batches but a run is reproducible.
    """
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    order = np.lexsort((tiebreak, lengths))
    batches, start = [], 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        if max_tokens is not None:
            # The longest sequence is last in a sorted slice: shrink until it fits the token budget.
            while end - start > 1 and (end - start) * (int(lengths[order[end - 1]]) + 1) > max_tokens:
                end -= 1
        batches.append(order[start:end])
        start = end
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
