"""A small, realistic, fully synthetic demo corpus: protein MSAs with known contacts, and a promoter data set.

:func:`make_demo` writes (all paths relative to ``out_dir``):

* ``msa/``: six protein families sampled from Potts models with planted contacts, in every format the parsers
  read: ``demo_fam1.a3m`` (ColabFold-style ``#`` line, ``>ss_pred``/``>ss_conf``, tab-separated hit headers,
  lowercase insertions), ``demo_fam2.a3m.gz``, ``demo_fam3.sto`` (interleaved Stockholm with insert columns),
  ``demo_fam4.fasta`` (aligned FASTA, 60 columns a line), ``demo_fam5_fam6.a3m`` (two NUL-separated blocks)
  and ``demo_subsets.tar.gz`` (a Stockholm subsample of fam1, an A3M subsample of fam3 and an ``msa.sh``).
* ``msa/broken/``: ``empty.a3m``, ``ragged.fasta`` and ``not_an_alignment.a3m``, which the parsers reject.
* ``truth/``: ``<family>_contacts.csv`` (``i,j``, 1-based query columns) and ``pairs.csv``
  (``name,msa,truth,block``, paths relative to ``truth/``).
* ``promoter/``: ``train.csv`` / ``dev.csv`` / ``test.csv`` (``sequence,label``, 70 nt, TSS at position 34),
  ``test.fa`` (``>test_k label=y``) and ``long.fa`` (unlabelled 300-nt sequences for sliding windows).
* ``README.md``.

Everything is made here from numpy random streams seeded by ``seed`` (no third-party data), and the bytes
depend only on the seed: gzip headers carry mtime 0 and tar members a fixed mtime / owner.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msaformer.errors import MsaformerError
from msaformer.files import atomic_write, csv_text, write_text

__all__ = ["FAMILIES", "DemoSummary", "make_demo"]

AMINO = "ACDEFGHIKLMNPQRSTVWY"
# UniProt background frequencies, in AMINO order.
_BACKGROUND = np.array([8.3, 1.4, 5.5, 6.7, 3.9, 7.1, 2.3, 5.9, 5.8, 9.7,
                        2.4, 4.1, 4.7, 3.9, 5.5, 6.6, 5.3, 6.9, 1.1, 2.9])
_BACKGROUND = _BACKGROUND / _BACKGROUND.sum()
#: (name, length, depth) of the families, in the order of the files that hold them (see the module docstring).
FAMILIES = (("demo_fam1", 64, 600), ("demo_fam2", 97, 300), ("demo_fam3", 82, 240),
            ("demo_fam4", 128, 150), ("demo_fam5", 48, 120), ("demo_fam6", 113, 60))
#: (file under msa/, NUL block index or "") of each family, in FAMILIES order.
_FILE_OF = (("demo_fam1.a3m", ""), ("demo_fam2.a3m.gz", ""), ("demo_fam3.sto", ""), ("demo_fam4.fasta", ""),
            ("demo_fam5_fam6.a3m", "0"), ("demo_fam5_fam6.a3m", "1"))
_SUBSAMPLE = 40  # rows of fam1 / fam3 in the tar archive
_TAR_MTIME = 1704067200  # 2024-01-01 UTC: any fixed value keeps the archive byte-reproducible
_SWEEPS = 80  # Gibbs sweeps; chains forget their start (identity to it falls to that of independent chains) in ~40
TSS = 34  # 1-based position of the transcription start site in the 70-nt promoter windows
PROMOTER_LENGTH = 70


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`make_demo` wrote: counts, the seed, the run time, every file (relative to ``out_dir``,
    sorted) and ``queries``, the ``(family, query sequence)`` of every family in :data:`FAMILIES` order."""

    out_dir: Path
    alignment_files: int
    broken_files: int
    families: int
    promoter_records: int
    seconds: float
    seed: int = 0
    files: tuple[str, ...] = ()
    queries: tuple[tuple[str, str], ...] = ()


@dataclass
class _Family:
    name: str
    aligned: np.ndarray  # [N, L] uint8 ASCII, uppercase residues and '-'; row 0 is the query (gap-free)
    insertions: list[dict[int, str]]  # per row: column -> lowercase residues inserted before that column
    names: list[str]  # record names (first header word)
    contacts: np.ndarray  # [K, 2] 0-based (i, j), i + 6 <= j
    ss: str  # a 3-state secondary structure string (hh-suite ss_pred style) of the planted fold


# ------------------------------------------------------------------------------------------ structure
def _fold(length: int, rng: np.random.Generator) -> np.ndarray:
    """Returns [L, 3] C-alpha coordinates of a compact self-avoiding random chain (3.8 A steps).

    Each step is a random direction pulled toward the centroid, more strongly the farther the chain is from it,
    so the chain fills a sphere of roughly a real domain's size (Rg ~ 2.2 L^0.38 A); candidates that clash
    (< 4.5 A to any residue, < 5.4 A to i-2, i.e. a bond angle under ~90 degrees) are rejected.
    """
    radius = 1.5 * 2.2 * length ** 0.38 * np.sqrt(5 / 3)
    pos = np.zeros((length, 3))
    for k in range(1, length):
        towards = pos[:k].mean(axis=0) - pos[k - 1]
        dist = np.linalg.norm(towards)
        towards = towards / dist if dist > 1e-9 else towards
        step = rng.normal(size=(24, 3))
        step /= np.linalg.norm(step, axis=1, keepdims=True)
        step += 1.5 * (dist / radius) ** 2 * towards
        candidates = pos[k - 1] + 3.8 * step / np.linalg.norm(step, axis=1, keepdims=True)
        pick = 0
        if k >= 2:
            d = np.linalg.norm(candidates[:, None, :] - pos[None, : k - 1], axis=2)
            margin = np.minimum(d.min(axis=1) - 4.5, d[:, k - 2] - 5.4)
            ok = np.flatnonzero(margin > 0)
            pick = int(ok[0]) if ok.size else int(np.argmax(margin))
        pos[k] = candidates[pick]
    return pos


def _contacts_and_ss(length: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Returns ``(contacts [K, 2] 0-based with j - i >= 6 and distance < 8 A, 3-state ss string)``.

    Folds are redrawn (from the same stream, so still deterministic; a few tries at most in practice) until the
    map has L to 2L contacts and a realistic share of long-range ones, so every seed gives a usable benchmark.
    """
    i, j = np.triu_indices(length, 6)
    for _ in range(200):
        pos = _fold(length, rng)
        near = np.linalg.norm(pos[i] - pos[j], axis=1) < 8.0
        contacts = np.column_stack((i[near], j[near]))
        long_range = np.count_nonzero(contacts[:, 1] - contacts[:, 0] >= 24)
        if length <= len(contacts) <= 2 * length and long_range >= max(3, len(contacts) // 5):
            break
    # i-2 .. i+2 span: short in a helix-like turn, long in an extended strand (a rough DSSP stand-in)
    span = np.full(length, 9.0)
    span[2:-2] = np.linalg.norm(pos[4:] - pos[:-4], axis=1)
    ss = "".join(np.where(span < 8.5, "H", np.where(span > 11.5, "E", "C")))
    return contacts, ss


# ------------------------------------------------------------------------------------------- Potts model
def _compatibility() -> np.ndarray:
    """Returns a [20, 20] symmetric score of residue pairs across a contact (packing, salt bridges)."""
    groups = {"h": "AVILMFWC", "p": "KRH", "n": "DE", "o": "STNQYG"}
    kind = {a: g for g, letters in groups.items() for a in letters}
    table = {"hh": 1.0, "np": 1.3, "pp": -1.0, "nn": -1.0, "hp": -0.7, "hn": -0.7, "oo": 0.3, "op": 0.2,
             "no": 0.2, "ho": -0.2}  # keys in sorted letter order; P (proline) and unlisted pairs score 0
    score = np.array([[table.get("".join(sorted(kind.get(x, "x") + kind.get(y, "x"))), 0.0) for y in AMINO]
                      for x in AMINO])
    return score - score.mean()


def _potts(length: int, contacts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(fields h [L, 20], couplings J [K, 20, 20])``; J[k, a, b] couples residue a at contacts[k, 0]
    with residue b at contacts[k, 1]."""
    # Column profiles from a Dirichlet around the background: a small concentration gives a conserved column.
    concentration = np.exp(rng.uniform(np.log(1.5), np.log(40.0), size=length))
    profile = np.stack([rng.dirichlet(c * _BACKGROUND) for c in concentration])
    h = np.log(profile + 0.01)
    # Compatible pairs favoured, plus a pair-specific random part so that no two contacts look alike.
    strength = rng.uniform(0.8, 1.4, size=(len(contacts), 1, 1))
    couplings = strength * (_compatibility()[None] + 0.8 * rng.normal(size=(len(contacts), 20, 20)))
    return h.astype(np.float32), couplings.astype(np.float32)


def _gibbs(h: np.ndarray, contacts: np.ndarray, couplings: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Returns [n, L] uint8 residue indices: the states of n independent Gibbs chains after :data:`_SWEEPS`
    sweeps.

    Sites are updated one colour class of the contact graph at a time (no two coupled sites together), every
    chain at once; the conditional energy of a site only needs the couplings to its contact neighbours.
    """
    length = h.shape[0]
    # Directed edges site <- neighbour; edge e's [site state, neighbour state] table is columns 20e..20e+19 of
    # one [20, 20E] matrix, so a single np.take fetches the 20 energies of every chain's neighbour state.
    site = np.concatenate((contacts[:, 0], contacts[:, 1]))
    neighbour = np.concatenate((contacts[:, 1], contacts[:, 0]))
    tables = np.concatenate((couplings, couplings.transpose(0, 2, 1)))
    flat = np.ascontiguousarray(tables.transpose(1, 0, 2).reshape(20, -1))
    edges_of = [np.flatnonzero(site == s) for s in range(length)]
    colour = np.zeros(length, dtype=np.int64)  # greedy colouring
    for s in range(length):
        used = set(colour[neighbour[edges_of[s]][neighbour[edges_of[s]] < s]].tolist())
        colour[s] = next(c for c in range(length) if c not in used)
    classes = []
    for c in range(int(colour.max()) + 1):
        # Sites by decreasing degree: the d-th edges of all sites with more than d edges form one gather.
        sites = sorted(np.flatnonzero(colour == c).tolist(), key=lambda s: -edges_of[s].size)
        levels = []
        for d in range(edges_of[sites[0]].size):
            e = np.array([edges_of[s][d] for s in sites if edges_of[s].size > d])
            levels.append((20 * e[:, None], neighbour[e]))
        classes.append((np.array(sites), h[sites].T[:, :, None], levels))

    # Start from the independent-sites model (close to equilibrium, so few sweeps are needed).
    p = np.exp(h - h.max(axis=1, keepdims=True))
    cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    x = np.minimum((rng.random((length, n, 1)) > cum[:, None, :]).sum(axis=2), 19).astype(np.uint8)  # [L, n]
    for _ in range(_SWEEPS):
        for sites, fields, levels in classes:
            energy = np.repeat(fields, n, axis=2)  # [20, S, n]
            for offsets, nbr in levels:
                energy[:, : offsets.size] += np.take(flat, offsets + x[nbr], axis=1)
            energy -= energy.max(axis=0)
            np.exp(energy, out=energy)
            for a in range(1, 20):  # cumulative sums slab by slab (np.cumsum along axis 0 is ~10x slower)
                energy[a] += energy[a - 1]
            u = rng.random(energy.shape[1:], dtype=np.float32) * energy[19]
            x[sites] = (u > energy[:19]).view(np.uint8).sum(axis=0, dtype=np.uint8)
    return np.ascontiguousarray(x.T)


def _family(name: str, length: int, depth: int, rng: np.random.Generator) -> _Family:
    """Returns one family: a planted fold, a Potts model on it, and ``depth`` sampled rows with realistic
    fragments, internal gap runs and insertions (row 0, the query, has none)."""
    contacts, ss = _contacts_and_ss(length, rng)
    h, couplings = _potts(length, contacts, rng)
    states = _gibbs(h, contacts, couplings, depth, rng)
    aligned = np.frombuffer(AMINO.encode(), dtype=np.uint8)[states]
    # Homologs sorted by identity to the query, as search tools list them.
    identity = (aligned[1:] == aligned[0]).mean(axis=1)
    aligned = np.concatenate((aligned[:1], aligned[1:][np.argsort(-identity, kind="stable")]))
    gap = ord("-")
    # Insertions occur at a few places (loops) shared by the family, not anywhere: so do real ones.
    coil = [c for c in range(1, length) if ss[c] == "C"]
    hotspots = rng.choice(coil if len(coil) >= length // 4 else np.arange(1, length), size=max(3, length // 12),
                          replace=False)
    insertions: list[dict[int, str]] = [{}]
    for r in range(1, depth):
        row, kind = aligned[r], rng.random()
        cover = int(length * rng.uniform(0.35, 0.9))
        if kind < 0.15:  # N-terminal fragment: the hit starts late
            row[: length - cover] = gap
        elif kind < 0.30:  # C-terminal fragment
            row[cover:] = gap
        if rng.random() < 0.2:  # an internal deletion
            start = int(rng.integers(1, length - 9))
            row[start : start + int(rng.integers(1, 9))] = gap
        inserted: dict[int, str] = {}
        if rng.random() < 0.25:  # 1-2 insertions between two aligned residues, at the family's loop hotspots
            for col in rng.choice(hotspots, size=int(rng.integers(1, 3))).tolist():
                if row[col] != gap and row[col - 1] != gap:
                    size = int(rng.integers(1, 7))
                    inserted[col] = "".join(rng.choice(list(AMINO.lower()), size=size, p=_BACKGROUND))
        insertions.append(inserted)
    names = [name] + [f"{name}_s{r:04d}" for r in range(1, depth)]
    return _Family(name, aligned, insertions, names, contacts, ss)


# ------------------------------------------------------------------------------------------- writers
def _row_text(fam: _Family, r: int, insert_width: np.ndarray | None = None) -> str:
    """Returns row r as A3M text (lowercase insertions before their column) or, given ``insert_width`` per
    column, as a Stockholm row (insert columns padded with '.')."""
    row = fam.aligned[r].tobytes().decode()
    ins = fam.insertions[r]
    if insert_width is None:
        return "".join(ins.get(c, "") + row[c] for c in range(len(row)))
    return "".join(ins.get(c, "").ljust(int(insert_width[c]), ".") + row[c] for c in range(len(row)))


def _hit_header(fam: _Family, r: int) -> str:
    """Returns an MMseqs2-style tab-separated header: name, bits, identity, E-value, qstart, qend, qlen,
    tstart, tend, tlen (0-based starts, as ColabFold writes them)."""
    row, query = fam.aligned[r], fam.aligned[0]
    cols = np.flatnonzero(row != ord("-"))
    same = int(np.count_nonzero(row[cols] == query[cols]))
    tlen = cols.size + sum(len(s) for s in fam.insertions[r].values())
    bits = max(20, 4 * same - cols.size // 2)
    return (f"{fam.names[r]}\t{bits}\t{same / max(cols.size, 1):.3f}\t{10.0 ** (-bits / 9):.3E}\t{cols[0]}\t"
            f"{cols[-1]}\t{row.size}\t0\t{tlen - 1}\t{tlen}")


def _a3m(fam: _Family, rows: range, *, ss: bool = False) -> str:
    """Returns the family as a ColabFold-style A3M (``#L\\t1`` line, optional hh-suite ss records)."""
    length = fam.aligned.shape[1]
    lines = [f"#{length}\t1"]
    if ss:
        conf = "".join("9" if s == "H" else "7" if s == "E" else "5" for s in fam.ss)
        lines += [">ss_pred PSIPRED predicted secondary structure", fam.ss, ">ss_conf PSIPRED confidence values", conf]
    for r in rows:
        header = f"{fam.names[r]}\tsynthetic Potts-model family, length {length}" if r == 0 else _hit_header(fam, r)
        lines += [">" + header, _row_text(fam, r)]
    return "\n".join(lines) + "\n"


def _stockholm(fam: _Family, rows: range, seed: int) -> str:
    """Returns the rows as interleaved Stockholm (blocks of 50 columns); insertions become insert columns,
    gapped in the query ('.'), lowercase in the rows that carry them."""
    length = fam.aligned.shape[1]
    width = np.zeros(length, dtype=np.int64)
    for r in rows:
        for c, s in fam.insertions[r].items():
            width[c] = max(width[c], len(s))
    texts = [_row_text(fam, r, width) for r in rows]
    names = [fam.names[r] for r in rows]
    ref = "".join("." * int(width[c]) + "x" for c in range(length))
    pad = max(len(n) for n in names + ["#=GC RF"]) + 2
    out = ["# STOCKHOLM 1.0", f"#=GF ID   {names[0]}", "#=GF DE   Synthetic Potts-model family (msaformer demo)",
           f"#=GF AU   msaformer.demo, seed {seed}", f"#=GF SQ   {len(texts)}", ""]
    for lo in range(0, len(ref), 50):
        out += [n.ljust(pad) + t[lo : lo + 50] for n, t in zip(names, texts)]
        out += ["#=GC RF".ljust(pad) + ref[lo : lo + 50], ""]
    return "\n".join(out) + "//\n"


def _fasta(names: list[str], rows: list[str]) -> str:
    """Returns FASTA text with sequence lines wrapped at 60 columns."""
    return "".join(f">{n}\n" + "".join(s[i : i + 60] + "\n" for i in range(0, len(s), 60)) for n, s in zip(names, rows))


def _tar_gz(members: list[tuple[str, str, int]]) -> bytes:
    """Returns a reproducible .tar.gz of ``(name, text, mode)`` members: sorted, fixed mtime and owner."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, text, mode in sorted(members):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, _TAR_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0)


# ------------------------------------------------------------------------------------------- promoters
_IUPAC = {"A": "A", "C": "C", "G": "G", "T": "T", "W": "AT", "S": "CG", "R": "AG", "Y": "CT", "N": "ACGT",
          "V": "ACG"}
_DNA = np.frombuffer(b"ACGT", dtype=np.uint8)


def _dna(n: int, length: int, gc: float, rng: np.random.Generator) -> np.ndarray:
    """Returns [n, length] uint8 ASCII background DNA with GC fraction ``gc``."""
    cum = np.cumsum([(1 - gc) / 2, gc / 2, gc / 2])
    return _DNA[np.searchsorted(cum, rng.random((n, length)), side="right")]


def _plant(seqs: np.ndarray, rows: np.ndarray, starts: np.ndarray, code: str, rng: np.random.Generator,
           mutate: float = 0.1) -> None:
    """Writes an IUPAC motif (one random instance per row, each base mutated with probability ``mutate``)
    into ``seqs[rows, starts:starts + len(code)]`` in place."""
    size = len(code)
    motif = np.empty((rows.size, size), dtype=np.uint8)
    for k, letter in enumerate(code):
        options = np.frombuffer(_IUPAC[letter].encode(), dtype=np.uint8)
        motif[:, k] = options[rng.integers(0, options.size, rows.size)]
    mutated = rng.random(motif.shape) < mutate
    motif[mutated] = _DNA[rng.integers(0, 4, int(mutated.sum()))]
    seqs[rows[:, None], starts[:, None] + np.arange(size)] = motif


def _promoters(n: int, rng: np.random.Generator, *, strong: bool = False) -> np.ndarray:
    """Returns [n, 70] uint8 promoter windows (TSS at :data:`TSS`): a TATA box at -31..-24 in 35 % (the
    TATAAA core at positions 3-8, +-1 nt), an initiator YYANWYY spanning the TSS in 65 %, a DPE RGWYV at
    +28..+32 in 30 %, a GC box upstream in 35 %; ``strong`` windows carry TATA and Inr always."""
    seqs = _dna(n, PROMOTER_LENGTH, 0.54, rng)  # core promoters are slightly GC-rich
    def some(p):
        return np.flatnonzero(rng.random(n) < p)
    tata = np.arange(n) if strong else some(0.35)
    _plant(seqs, tata, 2 + rng.choice([-1, 0, 0, 0, 0, 1], tata.size), "TATAWAWR", rng)
    inr = np.arange(n) if strong else some(0.65)
    _plant(seqs, inr, np.full(inr.size, TSS - 3), "YYANWYY", rng)  # its A is the TSS
    dpe = some(0.3)
    _plant(seqs, dpe, np.full(dpe.size, TSS + 26), "RGWYV", rng)
    gc_box = some(0.35)
    _plant(seqs, gc_box, rng.integers(12, 19, gc_box.size), "GGGCGG", rng)
    return seqs


def _promoter_split(n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Returns ``(sequences, labels)``: n/2 promoters and n/2 background windows with decoy motifs at wrong
    positions, in random order, with 4 % of the labels swapped (as many 0->1 as 1->0, so classes stay
    balanced)."""
    half = n // 2
    negatives = _dna(n - half, PROMOTER_LENGTH, 0.5, rng)
    def some(p):
        return np.flatnonzero(rng.random(n - half) < p)
    rows = some(0.3)
    _plant(negatives, rows, rng.integers(16, 62, rows.size), "TATAWAWR", rng)
    rows = some(0.3)
    starts = rng.integers(0, 42, rows.size)
    _plant(negatives, rows, np.where(starts < 22, starts, starts + 22), "YYANWYY", rng)  # never at 23..43
    rows = some(0.3)
    _plant(negatives, rows, rng.integers(0, 64, rows.size), "GGGCGG", rng)
    seqs = np.concatenate((_promoters(half, rng), negatives))
    labels = np.repeat(np.array([1, 0]), [half, n - half])
    flips = round(0.02 * n)
    labels[rng.choice(half, flips, replace=False)] = 0
    labels[half + rng.choice(n - half, flips, replace=False)] = 1
    order = rng.permutation(n)
    return [s.tobytes().decode() for s in seqs[order]], labels[order]


# ------------------------------------------------------------------------------------------- main
def _readme(seed: int, fams: list[_Family], sizes: dict[str, int]) -> str:
    """Returns the README.md text of a corpus."""
    table = "\n".join(f"| {f.name} | {f.aligned.shape[1]} | {f.aligned.shape[0]} | {len(f.contacts)} |" for f in fams)
    return f"""# msaformer demo corpus (seed {seed})

Synthetic data made by `msaformer.demo.make_demo` (msaformer itself, no third-party data). Rerunning with the
same seed gives byte-identical files.

## Protein MSAs (`msa/`, truth in `truth/`)

Each family: a compact self-avoiding random C-alpha chain (3.8 A steps pulled toward its centroid) gives the
planted contacts (distance < 8 A, |i-j| >= 6, in `truth/<family>_contacts.csv`, 1-based query columns); a
Potts model has conserved-column fields and couplings only on those contacts (favouring compatible residue
pairs); rows are independent Gibbs chains ({_SWEEPS} sweeps). Row 1 is the gap-free query; other rows are
sorted by identity and carry N-/C-terminal fragments, internal gaps and (A3M, Stockholm) insertions.

| family | length | depth | contacts |
|---|---|---|---|
{table}

Files: `demo_fam1.a3m` (ColabFold style, ss_pred/ss_conf), `demo_fam2.a3m.gz`, `demo_fam3.sto` (Stockholm),
`demo_fam4.fasta` (aligned FASTA), `demo_fam5_fam6.a3m` (two NUL-separated blocks: fam5, fam6),
`demo_subsets.tar.gz` (first {_SUBSAMPLE} rows of fam1 as Stockholm and of fam3 as A3M, plus `msa.sh`, which is
not an alignment). `msa/broken/` holds three files the parser must reject. `truth/pairs.csv` maps each family
to its MSA file (and NUL block) and truth file.

## Promoters (`promoter/`)

A GUE prom_core-like task: 70-nt windows, TSS at position {TSS}. Positives carry core-promoter motifs at their
biological places (TATA box at -31..-24, initiator YYANWYY over the TSS, DPE at +28..+32, GC box upstream),
with 10 % point mutations; negatives are GC-0.5 background with decoy motifs at wrong positions; 4 % of the
labels are swapped. `train.csv` {sizes['train']}, `dev.csv` {sizes['dev']}, `test.csv` {sizes['test']}
records (balanced), `test.fa` = the test set as FASTA (`label=` in headers), `long.fa` = 20 unlabelled 300-nt
sequences, half of them holding one promoter window (its position in the header).
"""


def make_demo(out_dir: str | os.PathLike, seed: int = 0) -> DemoSummary:
    """Writes the demo corpus into ``out_dir`` (created if needed; existing files are replaced, each one
    atomically) and returns a :class:`DemoSummary`. The output depends only on ``seed``."""
    began = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MsaformerError(f"demo seed must be a non-negative integer, not {seed!r}")
    seed = int(seed)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MsaformerError(f"demo output folder {out} exists and is not a folder")
    try:
        for sub in ("msa/broken", "truth", "promoter"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MsaformerError(f"cannot create demo output folder {out} ({exc.strerror or exc})") from None

    written: list[str] = []
    def put(rel: str, content: str | bytes) -> None:
        if isinstance(content, bytes):
            with atomic_write(out / rel, "wb") as fh:
                fh.write(content)
        else:
            write_text(out / rel, content)
        written.append(rel)

    # One independent stream per family and for the promoters: changing one part never shifts another.
    fams = [_family(name, length, depth, np.random.default_rng([seed, k]))
            for k, (name, length, depth) in enumerate(FAMILIES)]
    f1, f2, f3, f4, f5, f6 = fams
    put("msa/demo_fam1.a3m", _a3m(f1, range(len(f1.names)), ss=True))
    put("msa/demo_fam2.a3m.gz", gzip.compress(_a3m(f2, range(len(f2.names))).encode(), compresslevel=9, mtime=0))
    put("msa/demo_fam3.sto", _stockholm(f3, range(len(f3.names)), seed))
    put("msa/demo_fam4.fasta", _fasta([f"{n} synthetic Potts-model family" if r == 0 else n
                                       for r, n in enumerate(f4.names)],
                                      [row.tobytes().decode() for row in f4.aligned]))
    put("msa/demo_fam5_fam6.a3m", _a3m(f5, range(len(f5.names))) + "\x00" + _a3m(f6, range(len(f6.names))))
    # Subsamples under their own record names (names are unique across the corpus).
    sub = range(_SUBSAMPLE)
    sub1 = dataclasses.replace(f1, names=[n.replace(f1.name, f1.name + "_sub") for n in f1.names])
    sub3 = dataclasses.replace(f3, names=[n.replace(f3.name, f3.name + "_sub") for n in f3.names])
    script = "#!/bin/sh\n# How these alignments were made: synthetic Potts-model samples, msaformer.demo.make_demo\n"
    put("msa/demo_subsets.tar.gz", _tar_gz([
        ("demo_fam1_sub.sto", _stockholm(sub1, sub, seed), 0o644),
        ("demo_fam3_sub.a3m", _a3m(sub3, sub), 0o644),
        ("msa.sh", script, 0o755),
    ]))

    # Broken files, each failing in a different parser path.
    put("msa/broken/empty.a3m", "")
    ragged = [row.tobytes().decode() for row in f4.aligned[:5]]
    ragged[3] = ragged[3][:-3]
    put("msa/broken/ragged.fasta", _fasta([f"ragged_{k + 1}" for k in range(5)], ragged))
    put("msa/broken/not_an_alignment.a3m",
        "HEADER    DE NOVO PROTEIN                         01-JAN-24   XXXX\n"
        "ATOM      1  N   MET A   1      11.104  13.207   2.100  1.00  0.00           N\n>x\nMKV\n")

    pairs = []
    for fam, (msa, block) in zip(fams, _FILE_OF):
        truth = f"{fam.name}_contacts.csv"
        put(f"truth/{truth}", csv_text(["i", "j"], (fam.contacts + 1).tolist()))
        pairs.append([fam.name, f"../msa/{msa}", truth, block])
    put("truth/pairs.csv", csv_text(["name", "msa", "truth", "block"], pairs))

    rng = np.random.default_rng([seed, len(FAMILIES)])
    sizes = {"train": 4000, "dev": 500, "test": 500}
    splits = {split: _promoter_split(n, rng) for split, n in sizes.items()}
    for split, (seqs, labels) in splits.items():
        put(f"promoter/{split}.csv", csv_text(["sequence", "label"], zip(seqs, labels.tolist())))
    seqs, labels = splits["test"]
    put("promoter/test.fa", "".join(f">test_{k + 1} label={y}\n{s}\n" for k, (s, y) in enumerate(zip(seqs, labels))))
    # Sliding-window input: background with one strong promoter window (TATA + Inr) in half of the records.
    long = _dna(20, 300, 0.5, rng)
    with_promoter = np.sort(rng.choice(20, 10, replace=False))
    starts = rng.integers(0, 300 - PROMOTER_LENGTH + 1, 20)
    window = starts[with_promoter, None] + np.arange(PROMOTER_LENGTH)
    long[with_promoter[:, None], window] = _promoters(10, rng, strong=True)
    heads = [f"long_{k + 1} promoter_window={starts[k] + 1}-{starts[k] + PROMOTER_LENGTH} tss={starts[k] + TSS}"
             if k in set(with_promoter.tolist()) else f"long_{k + 1} background" for k in range(20)]
    put("promoter/long.fa", _fasta(heads, [s.tobytes().decode() for s in long]))
    put("README.md", _readme(seed, fams, sizes))

    return DemoSummary(out_dir=out, alignment_files=6, broken_files=3, families=len(fams),
                       promoter_records=sum(sizes.values()), seconds=time.perf_counter() - began, seed=seed,
                       files=tuple(sorted(written)),
                       queries=tuple((f.name, f.aligned[0].tobytes().decode()) for f in fams))
