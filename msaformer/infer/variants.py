"""Zero-shot variant effect scores: the masked-marginal score of Meier et al. (2021), as in fair-esm's
``variant-prediction/predict.py`` for ESM-MSA-1b.

For a substitution ``A23V`` the query token at aligned column 23 (1-based) is replaced by ``<mask>``, the
model is run on the whole (subsampled) alignment, and the score is ``log p(V) - log p(A)`` at that position.
One forward pass per distinct mutated position, several positions per batch; a multi-mutant ``A23V:G40W``
scores the sum of its singles (the additive model). Positive = the model prefers the mutant.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from msaformer.data.alphabet import MASK_IDX, TOKEN_TO_ID
from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError

_SINGLE = re.compile(r"^([A-Za-z])(\d+)([A-Za-z])$")
#: Letters a wild type or mutant may be (one-letter residue codes of the vocabulary).
RESIDUE_LETTERS = frozenset(t for t in TOKEN_TO_ID if len(t) == 1 and t.isalpha())
#: Column names recognised as the mutation column of a CSV (else the first column is used).
MUTATION_COLUMNS = ("mutation", "mutant", "mutations", "variant")


@dataclass(frozen=True)
class Substitution:
    """One amino-acid substitution at a 1-based aligned column of the query."""

    wt: str
    position: int
    mt: str

    def __str__(self) -> str:
        return f"{self.wt}{self.position}{self.mt}"


def parse_mutation(text: str) -> tuple[Substitution, ...]:
    """Returns the substitutions of ``A23V`` or ``A23V:G40W`` (upper-cased; positions 1-based).

    Raises:
        MsaformerError: malformed text, a letter outside the vocabulary, or one position mutated twice.
    """
    parts = [p.strip() for p in text.strip().split(":")]
    if not text.strip() or any(not p for p in parts):
        raise MsaformerError(f"mutation {text!r}: expected e.g. A23V or A23V:G40W")
    subs = []
    for part in parts:
        m = _SINGLE.match(part)
        if m is None:
            raise MsaformerError(f"mutation {text!r}: {part!r} is not <wild type><position><mutant>, e.g. A23V")
        wt, pos, mt = m.group(1).upper(), int(m.group(2)), m.group(3).upper()
        for letter in (wt, mt):
            if letter not in RESIDUE_LETTERS:
                raise MsaformerError(f"mutation {text!r}: {letter!r} is not an amino-acid letter")
        if pos < 1:
            raise MsaformerError(f"mutation {text!r}: positions are 1-based, got {pos}")
        subs.append(Substitution(wt, pos, mt))
    positions = [s.position for s in subs]
    if len(set(positions)) != len(positions):
        raise MsaformerError(f"mutation {text!r}: a position is mutated more than once")
    return tuple(subs)


def check_wild_type(subs: tuple[Substitution, ...], msa: Msa, text: str = "") -> None:
    """Raises MsaformerError unless every substitution's wild type is the query's residue at its column."""
    query = msa.query
    label = text or ":".join(map(str, subs))
    for s in subs:
        if s.position > len(query):
            raise MsaformerError(f"mutation {label}: position {s.position} is past the query's {len(query)} columns")
        found = query[s.position - 1].upper()
        if found in "-.":
            raise MsaformerError(f"mutation {label}: the query has a gap ({found!r}) at column {s.position}")
        if found != s.wt:
            raise MsaformerError(
                f"mutation {label}: wild type {s.wt} does not match the query, which has {found} at column {s.position}"
            )


def read_mutations(path: str | Path) -> tuple[list[str], list[dict[str, str]], str]:
    """Returns ``(columns, rows, mutation_column)`` of a mutations file.

    A CSV whose header has a ``mutation`` / ``mutant`` column (other columns are kept and copied to the
    output), or a plain list with one mutation per line (no header).
    """
    columns, rows, mut_col, _ = _read_mutations_with_lines(path)
    return columns, rows, mut_col


def _read_mutations_with_lines(path: str | Path) -> tuple[list[str], list[dict[str, str]], str, list[int]]:
    """:func:`read_mutations` plus the 1-based file line of each row (for error messages)."""
    from msaformer.files import read_user_text

    path = Path(path)
    text = read_user_text(path, "mutations file")
    numbered = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.startswith("#")]
    if not numbered:
        raise MsaformerError(f"{path}: no mutations in this file")
    line_nos = [n for n, _ in numbered]
    lines = [ln for _, ln in numbered]
    header = next(csv.reader([lines[0]]))
    lowered = [h.strip().lower() for h in header]
    column = next((c for c in MUTATION_COLUMNS if c in lowered), None)
    if column is None:
        if not header or _SINGLE.match(header[0].strip().split(":")[0]) is None:
            raise MsaformerError(
                f"{path}: first line {lines[0]!r} is neither a header with a 'mutation' column nor a mutation"
            )
        rows = [{"mutation": (next(csv.reader([ln])) or [""])[0].strip()} for ln in lines]
        return ["mutation"], rows, "mutation", line_nos
    columns = [c.strip() for c in header]
    mut_col = columns[lowered.index(column)]
    rows = []
    for n, fields in zip(line_nos[1:], csv.reader(lines[1:])):
        if len(fields) != len(columns):
            raise MsaformerError(
                f"{path}, line {n}: {len(fields)} fields, but the header has {len(columns)} ({','.join(columns)})"
            )
        rows.append({c: v.strip() for c, v in zip(columns, fields)})
    if not rows:
        raise MsaformerError(f"{path}: a header but no mutations")
    return columns, rows, mut_col, line_nos[1:]


@torch.no_grad()
def masked_log_probs(runner, msa: Msa, positions: list[int], share: tuple[int, int] = (0, 1)) -> dict[int, np.ndarray]:
    """Returns ``{position: log-probabilities [33]}`` at each 1-based query column, that column masked.

    Each position is its own copy of the alignment in the batch (one masked token per copy); copies are
    batched so that a forward stays within ``runner.toks_per_batch`` tokens (at least one copy).
    ``share=(rank, world)`` computes only the batches ``rank, rank + world, ...`` (the same batches as one
    process, so the same numbers).
    """
    base = runner.encode([msa])[0]  # (N, L+1)
    per_forward = max(1, runner.toks_per_batch // base.numel())
    out: dict[int, np.ndarray] = {}
    rank, world = share
    for start in range(rank * per_forward, len(positions), per_forward * world):
        chunk = positions[start : start + per_forward]
        tokens = base.unsqueeze(0).repeat(len(chunk), 1, 1)
        for b, pos in enumerate(chunk):
            tokens[b, 0, pos] = MASK_IDX  # column pos (1-based) is token pos: <cls> sits at 0
        logits = runner.forward(tokens)["logits"]
        idx = torch.tensor(chunk, device=logits.device)
        picked = logits[torch.arange(len(chunk), device=logits.device), 0, idx].float()  # (b, 33)
        logp = torch.log_softmax(picked, dim=-1).cpu().numpy()
        for b, pos in enumerate(chunk):
            out[pos] = logp[b]
    return out


def _shared_log_probs(runner, msa: Msa, positions: list[int]) -> dict[int, np.ndarray]:
    """:func:`masked_log_probs` in one process, or shared out over a launcher's ranks (gathered on every rank)."""
    from msaformer.infer.distributed import launched_world_size

    import torch.distributed as dist

    if launched_world_size() <= 1 or not dist.is_initialized():
        return masked_log_probs(runner, msa, positions)
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, masked_log_probs(runner, msa, positions, (dist.get_rank(), dist.get_world_size())))
    return {k: v for part in parts for k, v in part.items()}


def score_mutations(runner, msa: Msa, mutations: list[str]) -> list[float]:
    """Returns the masked-marginal score of each mutation string on ``msa`` (query = row 0).

    Raises:
        MsaformerError: a malformed mutation or a wild type that does not match the query.
    """
    parsed = []
    for text in mutations:
        subs = parse_mutation(text)
        check_wild_type(subs, msa, text)
        parsed.append(subs)
    positions = sorted({s.position for subs in parsed for s in subs})
    logp = _shared_log_probs(runner, msa, positions)
    return [
        float(sum(logp[s.position][TOKEN_TO_ID[s.mt]] - logp[s.position][TOKEN_TO_ID[s.wt]] for s in subs))
        for subs in parsed
    ]


def score_variants(
    msa_path: str | Path,
    mutations_path: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    max_seqs: int | None = None,
    subsample_mode: str = "first",
    seed: int = 0,
    toks_per_batch: int = 2**16,
    device: str = "auto",
    dtype: str = "auto",
    model=None,
) -> list[dict[str, str]]:
    """Scores every mutation of ``mutations_path`` against the query of ``msa_path``; writes ``out`` (CSV).

    ``max_seqs``: rows kept, query included (None = 256 or the model's ``max_rows`` if smaller; 0 = all).
    The output has the input's columns plus ``score``, in input order, and is written atomically.
    Returns the output rows.
    """
    from msaformer.data import read_alignments
    from msaformer.data.sampling import subsample
    from msaformer.files import csv_text, write_text
    from msaformer.infer.msa import MsaInference

    out = Path(out)
    if not out.parent.is_dir():
        raise MsaformerError(f"output folder does not exist: {out.parent} (create it first)")
    columns, rows, mut_col, line_nos = _read_mutations_with_lines(mutations_path)
    msa_path = Path(msa_path)
    if not msa_path.is_file():
        raise MsaformerError(f"alignment not found: {msa_path}")
    msas = read_alignments(msa_path)
    if len(msas) != 1:
        raise MsaformerError(f"{msa_path}: holds {len(msas)} alignments; score-variants needs exactly one")
    msa = msas[0]
    if msa.depth == 0 or msa.length == 0:
        raise MsaformerError(f"{msa_path}: empty alignment")
    if model is None:
        runner = MsaInference.from_checkpoint(checkpoint, device=device, dtype=dtype, toks_per_batch=toks_per_batch)
    else:
        runner = MsaInference(model, device=device, dtype=dtype, toks_per_batch=toks_per_batch)
    msa = subsample(msa, runner.rows_limit(max_seqs), subsample_mode, seed)
    reason = runner.check(msa)
    if reason is not None:
        raise MsaformerError(f"{msa_path}: {reason}")
    for row, n in zip(rows, line_nos):  # every mutation checked first, its error naming file and line
        try:
            check_wild_type(parse_mutation(row[mut_col]), msa, row[mut_col])
        except MsaformerError as exc:
            raise MsaformerError(f"{mutations_path}, line {n}: {exc}") from None
    scores = score_mutations(runner, msa, [row[mut_col] for row in rows])
    header = [*(c for c in columns if c != "score"), "score"]
    for row, score in zip(rows, scores):
        row["score"] = f"{score:.6f}"
    from msaformer.infer.distributed import launcher_ranks

    if launcher_ranks().is_main:  # under a launcher, rank 0 writes
        write_text(out, csv_text(header, ([row.get(c, "") for c in header] for row in rows)))
    return rows
