"""``msaformer contacts evaluate``: precision at L of any method against structures (or planted contact lists).

A pairs file lists proteins, one a row (CSV, or TSV when it has tabs; paths relative to the file):

* ``name``: a unique name (also ``label``); ``msa``: the alignment file; ``block`` (optional): which alignment
  (0-based) of a NUL-separated file;
* either ``structure`` and ``chain``: a PDB / mmCIF file (plain or gzipped) and its chain id
  (:mod:`msaformer.structures`), or ``truth``: a contact list CSV ``i,j`` (1-based query columns; what
  ``msaformer demo`` writes in ``truth/``).

A header line may start with ``#`` and a header cell may carry a remark after its first word (the shipped
``../shared/datasets/structures/pairs.tsv`` reads as it is). :func:`evaluate_pairs` writes into one folder,
put in place only when every protein succeeded:

* ``precision.csv``: one row per protein (``name, method, L, rows, observed, long_true``, then
  :data:`~msaformer.contacts.precision.METRICS`), then a ``mean`` row (means over the proteins that have a
  value; empty cells are classes without a true contact);
* ``maps.h5``: one float32 ``[L, L]`` dataset per protein, named by its ``name``: the predicted map; index
  ``k`` is query column ``k + 1`` (1-based, as in every CSV and plot), attributes ``method``, ``msa``,
  ``truth``; the true map is under ``true/<name>`` (int8: 1 contact, 0 none, -1 unknown);
* ``<name>.png``: the true contacts (grey) in both triangles, the top-L predicted pairs at separation >= 6 in
  the upper one (blue correct, red wrong), P@L in the title.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msaformer.contacts.precision import METRICS, mean_row, precisions
from msaformer.contacts.predictors import ContactPredictor
from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError
from msaformer.progress import Counter, ProgressCallback
from msaformer.structures import StructureMaps, read_contact_list, true_maps

COLUMNS = ("name", "method", "L", "rows", "observed", "long_true", *METRICS)
_ALIASES = {"label": "name", "pdb": "structure"}


@dataclass(frozen=True)
class Pair:
    """One protein of a pairs file: its alignment and where its truth comes from."""

    name: str
    msa: Path
    block: int | None = None
    structure: Path | None = None
    chain: str = ""
    truth: Path | None = None


def read_pairs(path: str | Path) -> list[Pair]:
    """Returns the pairs of a pairs file (see the module docstring); one-line errors naming the file and line."""
    from msaformer.files import read_user_text

    path = Path(path)
    text = read_user_text(path, "pairs file")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise MsaformerError(f"{path}: the pairs file is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    header = []
    for cell in rows[0]:
        words = cell.strip().lstrip("#").strip().split()
        key = words[0].lower() if words else ""
        header.append(_ALIASES.get(key, key))
    missing = [c for c in ("name", "msa") if c not in header]
    if missing or not ({"structure", "chain"} <= set(header) or "truth" in header):
        raise MsaformerError(
            f"{path}: the header needs columns name, msa and either structure and chain or truth; got {rows[0]}"
        )
    pairs, seen = [], set()
    base = path.parent
    for number, row in enumerate(rows[1:], start=2):
        if row and row[0].lstrip().startswith("#"):
            continue
        cells = {k: (row[i].strip() if i < len(row) else "") for i, k in enumerate(header)}
        where = f"{path}: line {number}"
        name = cells["name"]
        if not name or not cells["msa"]:
            raise MsaformerError(f"{where}: name and msa must not be empty")
        if name in seen:
            raise MsaformerError(f"{where}: name {name!r} is used twice")
        seen.add(name)
        block = cells.get("block", "")
        try:
            block_index = int(block) if block else None
        except ValueError:
            raise MsaformerError(f"{where}: block {block!r} is not a 0-based integer") from None
        structure, chain, truth = cells.get("structure", ""), cells.get("chain", ""), cells.get("truth", "")
        if structure and not chain:
            raise MsaformerError(f"{where}: structure {structure} needs a chain id")
        if not structure and not truth:
            raise MsaformerError(f"{where}: give a structure (and chain) or a truth contact list")
        pairs.append(Pair(name=name, msa=base / cells["msa"], block=block_index,
                          structure=base / structure if structure else None, chain=chain,
                          truth=base / truth if truth else None))  # fmt: skip
    if not pairs:
        raise MsaformerError(f"{path}: the pairs file lists no protein")
    return pairs


def load_msa(pair: Pair) -> Msa:
    """Returns the pair's alignment (its ``block`` of a multi-alignment file)."""
    from msaformer.data.parsers import read_alignments

    msas = read_alignments(pair.msa)
    if pair.block is None:
        if len(msas) > 1:
            raise MsaformerError(f"{pair.msa}: holds {len(msas)} alignments; say which in the pairs file's block column")
        return msas[0]
    if not 0 <= pair.block < len(msas):
        raise MsaformerError(f"{pair.msa}: block {pair.block} asked for, the file holds {len(msas)} alignment(s)")
    return msas[pair.block]


def load_truth(pair: Pair, query: str, min_identity: float = 0.9) -> StructureMaps:
    """Returns the true maps of the pair over the query's columns."""
    if pair.structure is not None:
        return true_maps(pair.structure, pair.chain, query, min_identity=min_identity)
    return read_contact_list(pair.truth, len(query))


def query_length(query: str) -> int:
    """Returns L of P@L: the query's residues (columns that are not gaps in the query)."""
    return sum(c not in "-." for c in query) or len(query)


def score_map(predicted: np.ndarray, truth: StructureMaps, query: str) -> dict[str, float]:
    """Returns the precisions of one predicted map (query gap columns count as unknown)."""
    residue = np.array([c not in "-." for c in query])
    valid = truth.valid & residue[:, None] & residue[None, :]
    return precisions(predicted, truth.contacts, valid, length=query_length(query))


def plot_evaluation(path: str | Path, predicted: np.ndarray, truth: StructureMaps, title: str) -> None:
    """Writes the PNG of one protein (see the module docstring)."""
    from msaformer.plotting import pyplot, save_figure

    plt = pyplot()
    length = predicted.shape[0]
    fig, ax = plt.subplots(figsize=(5.2, 5.2), dpi=100)
    extent = (0.5, length + 0.5, length + 0.5, 0.5)
    unknown = ~truth.valid
    ax.imshow(np.where(unknown, 1.0, np.nan), cmap="Greys", vmin=0, vmax=8, extent=extent, interpolation="nearest")
    ti, tj = np.nonzero(truth.contacts & (np.abs(np.subtract.outer(np.arange(length), np.arange(length))) >= 6))
    ax.scatter(tj + 1, ti + 1, s=5, c="0.75", marker="s", linewidths=0, label="true contact")
    ii, jj = np.triu_indices(length, k=6)
    keep = truth.valid[ii, jj]
    ii, jj = ii[keep], jj[keep]
    order = np.lexsort((jj, ii, -np.nan_to_num(predicted[ii, jj], nan=-np.inf)))[:length]
    top = [(int(ii[k]) + 1, int(jj[k]) + 1) for k in order]
    good = [r for r in top if truth.contacts[r[0] - 1, r[1] - 1]]
    bad = [r for r in top if not truth.contacts[r[0] - 1, r[1] - 1]]
    ax.scatter([r[1] for r in good], [r[0] for r in good], s=7, c="tab:blue", marker="s", linewidths=0,
               label=f"top-L pairs (s >= 6), correct ({len(good)})")
    ax.scatter([r[1] for r in bad], [r[0] for r in bad], s=7, c="tab:red", marker="s", linewidths=0,
               label=f"top-L pairs (s >= 6), wrong ({len(bad)})")
    ax.set_xlim(0.5, length + 0.5)
    ax.set_ylim(length + 0.5, 0.5)
    ax.set_xlabel("residue j (query column, 1-based)")
    ax.set_ylabel("residue i (query column, 1-based)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=7, markerscale=2, framealpha=0.8)
    fig.tight_layout()
    save_figure(fig, path)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "protein"


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


@dataclass
class EvaluationResult:
    """What :func:`evaluate_pairs` measured: one dict per protein (:data:`COLUMNS`), then the mean."""

    rows: list[dict]
    mean: dict
    out_dir: Path
    seconds: float = 0.0


def evaluate_pairs(pairs: str | Path | Sequence[Pair], predictor: ContactPredictor, out_dir: str | Path, *,
                   min_identity: float = 0.9, plots: bool = True,
                   progress: ProgressCallback | None = None) -> EvaluationResult:
    """Predicts every pair's map with ``predictor``, scores it against its truth and writes ``out_dir``
    (atomically: a failed run leaves a previous folder as it was). Returns the rows and their mean."""
    import time

    import h5py

    from msaformer.files import atomic_dir, write_csv

    started = time.perf_counter()
    pair_list = read_pairs(pairs) if isinstance(pairs, (str, Path)) else list(pairs)
    method = predictor.options.method
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MsaformerError(f"--out {out_dir} exists and is not a folder")
    if not out_dir.parent.is_dir():
        raise MsaformerError(f"output folder does not exist: {out_dir.parent} (create it first)")
    counter = Counter("evaluate", "proteins", progress, total=len(pair_list))
    rows: list[dict] = []
    with atomic_dir(out_dir) as folder:
        with h5py.File(folder.path("maps.h5"), "w") as h5:
            h5.attrs["method"] = method
            h5.attrs["columns"] = "dataset index k = query column k + 1 (1-based)"
            for pair in pair_list:
                msa = load_msa(pair)
                truth = load_truth(pair, msa.query, min_identity)
                used = predictor.rows(msa)
                predicted = predictor.predict_rows(used, progress)
                scores = score_map(predicted, truth, msa.query)
                row = {"name": pair.name, "method": method, "L": query_length(msa.query), "rows": used.depth,
                       "observed": int(truth.observed.sum()), "long_true": scores["long_true"],
                       **{m: scores[m] for m in METRICS}}  # fmt: skip
                rows.append(row)
                ds = h5.create_dataset(pair.name, data=predicted.astype(np.float32))
                ds.attrs.update({"method": method, "msa": str(pair.msa), "truth": truth.source, "rows": used.depth})
                h5.create_dataset(f"true/{pair.name}", data=np.where(truth.valid, truth.contacts, -1).astype(np.int8))
                if plots:
                    p_at_l = scores["long_P@L"]
                    shown = "n/a" if math.isnan(p_at_l) else f"{p_at_l:.2f}"
                    plot_evaluation(folder.path(_file_name(pair.name) + ".png"), predicted, truth,
                                    f"{pair.name} ({method}, {used.depth} rows, L={row['L']})\nlong-range P@L {shown}")
                counter.advance(detail=pair.name)
        mean = {"name": "mean", "method": method, "L": "", "rows": "", "observed": "", "long_true": "",
                **mean_row(rows)}  # fmt: skip
        write_csv(folder.path("precision.csv"), COLUMNS, ([_fmt(r[c]) for c in COLUMNS] for r in [*rows, mean]))
    return EvaluationResult(rows=rows, mean=mean, out_dir=out_dir, seconds=time.perf_counter() - started)


__all__ = ["COLUMNS", "EvaluationResult", "Pair", "evaluate_pairs", "load_msa", "load_truth", "read_pairs",
           "score_map"]
