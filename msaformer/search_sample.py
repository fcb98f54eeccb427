"""Sequences with planted homologs: a target database and new queries whose true hits are known.

:func:`write_planted` draws protein families (a random ancestor each), writes mutated copies of every ancestor
(substitutions and short insertions / deletions) into a target FASTA among unrelated random decoys, and one
more mutated copy per family, absent from the targets, into a query FASTA, plus one query from no family.
A search of the queries against the targets should find exactly each query's family. Used by the tests, the
README tour and ``tools/bench_search.py``; real sequences are in :func:`msaformer.infer.search.sample_database`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The 20 amino acids and their background frequencies (UniProt, rounded).
AMINO = "ACDEFGHIKLMNPQRSTVWY"
FREQUENCIES = np.array([8.3, 1.4, 5.5, 6.7, 3.9, 7.1, 2.3, 5.9, 5.8, 9.7,
                        2.4, 4.1, 4.7, 3.9, 5.5, 6.6, 5.4, 6.9, 1.1, 2.9])  # fmt: skip
FREQUENCIES = FREQUENCIES / FREQUENCIES.sum()


@dataclass
class Planted:
    """What :func:`write_planted` wrote."""

    queries: Path
    targets: Path
    families: dict[str, list[str]] = field(default_factory=dict)  # query id -> its homologs' ids in the targets
    orphan: str = ""  # a query from no family


def _random(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(AMINO), size=length, p=FREQUENCIES))


def mutate(seq: str, identity: float, rng: np.random.Generator, indel_rate: float = 0.02) -> str:
    """Returns a copy of ``seq`` with about ``1 - identity`` of its residues substituted, and short insertions
    and deletions at ``indel_rate`` per residue."""
    out = []
    for residue in seq:
        roll = rng.random()
        if roll < indel_rate / 2:
            continue  # deletion
        if roll < indel_rate:
            out.append(_random(rng, int(rng.integers(1, 4))))  # insertion before this residue
        out.append(residue if rng.random() < identity else _random(rng, 1))
    return "".join(out)


def write_planted(
    out: str | Path,
    *,
    families: int = 8,
    members: int = 6,
    decoys: int = 300,
    identity: float = 0.6,
    lengths: tuple[int, int] = (80, 220),
    seed: int = 0,
) -> Planted:
    """Writes ``out/queries.fasta`` (one query per family and an orphan) and ``out/targets.fasta``
    (``families x members`` homologs shuffled among ``decoys`` random proteins); returns the truth."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    targets: list[tuple[str, str]] = []
    queries: list[tuple[str, str]] = []
    planted = Planted(out / "queries.fasta", out / "targets.fasta")
    for f in range(families):
        ancestor = _random(rng, int(rng.integers(*lengths)))
        query = f"fam{f:02d}_query"
        queries.append((query, mutate(ancestor, identity, rng)))
        planted.families[query] = []
        for k in range(members):
            name = f"fam{f:02d}_member{k}"
            targets.append((name, mutate(ancestor, identity, rng)))
            planted.families[query].append(name)
    planted.orphan = "orphan_query"
    queries.append((planted.orphan, _random(rng, int(rng.integers(*lengths)))))
    for d in range(decoys):
        targets.append((f"decoy{d:04d}", _random(rng, int(rng.integers(lengths[0], lengths[1] + 100)))))
    order = rng.permutation(len(targets))

    def fasta(records) -> str:
        return "".join(f">{name}\n" + "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n"
                       for name, seq in records)  # fmt: skip

    planted.queries.write_text(fasta(queries))
    planted.targets.write_text(fasta([targets[i] for i in order]))
    return planted


def main(argv: list[str] | None = None) -> int:
    """``python -m msaformer.search_sample OUT``: writes OUT/queries.fasta and OUT/targets.fasta."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m msaformer.search_sample OUT_FOLDER", file=sys.stderr)
        return 2
    planted = write_planted(args[0])
    print(f"wrote {planted.queries} ({len(planted.families) + 1} queries) and {planted.targets} "
          f"({sum(map(len, planted.families.values()))} planted homologs among random decoys)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
