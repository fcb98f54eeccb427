"""True contact and distance maps of an MSA's query from an experimental structure (Biopython's ``Bio.PDB``).

:func:`true_maps` reads a PDB or mmCIF file (plain or gzipped), takes one chain of its first model, maps the
chain's residues onto the query's columns by a pairwise alignment and returns :class:`StructureMaps`: the
C-beta distance map (C-alpha for glycine) and the contact map (distance < 8 A) over query columns, with every
column that has no coordinates masked, never guessed.

How residues are read:

* amino acids are the chain's standard residues and the modified ones Biopython knows (``MSE`` -> ``M``);
  waters and ligands are skipped. Alternate locations: Biopython's choice (highest occupancy).
* a residue whose atom is missing (C-beta of a non-glycine, C-alpha of a glycine) is kept in the sequence,
  so the alignment stays right, but is masked;
* a jump in residue numbering (``152`` then ``163``) is a run of unobserved residues: as many placeholders
  (masked) are put in the chain's sequence before aligning, so a gap in the coordinates lands where the numbers
  say; insertion codes (``52``, ``52A``, ``52B``) are consecutive residues and add none.

The alignment: :class:`Bio.Align.PairwiseAligner`, BLOSUM62, gap open -10, extend -0.5, free end gaps. The
identity over aligned observed residues must reach ``min_identity`` (0.9 by default), else the mapping is
refused: a structure of another protein gives a meaningless map.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msaformer.errors import MsaformerError

#: Distance (A) under which two residues are in contact (C-beta, C-alpha for glycine).
CONTACT_DISTANCE = 8.0
#: Longest numbering jump filled with placeholders; a longer one is taken as renumbering, not missing residues.
MAX_NUMBERING_GAP = 500
_MAX_BYTES = 1 << 30  # decompressed structure files larger than this are refused
_PLACEHOLDER = "X"


class StructureError(MsaformerError):
    """A structure file that cannot be used: unreadable, no such chain, no amino acids, or a mapping onto the
    query that is too poor to trust."""


@dataclass(frozen=True)
class StructureMaps:
    """True maps over the query's columns (0-based index ``k`` = query column ``k + 1``).

    Attributes:
        distance: ``[L, L]`` float32 C-beta distances (C-alpha for glycine), NaN where a residue is masked.
        contacts: ``[L, L]`` bool, ``distance < 8 A``; False where masked (see ``observed``).
        observed: ``[L]`` bool, the query columns with coordinates.
        identity: fraction of identical residues over aligned, observed residues.
        aligned: observed chain residues mapped onto query columns.
        chain_residues: amino-acid residues of the chain (observed ones, placeholders excluded).
        source: ``path:chain``.
    """

    distance: np.ndarray
    contacts: np.ndarray
    observed: np.ndarray
    identity: float
    aligned: int
    chain_residues: int
    source: str

    @property
    def length(self) -> int:
        return int(self.observed.size)

    @property
    def valid(self) -> np.ndarray:
        """Returns the ``[L, L]`` bool mask of pairs whose truth is known (both columns observed)."""
        return self.observed[:, None] & self.observed[None, :]


@dataclass(frozen=True)
class ChainResidues:
    """One chain's amino acids in order, with the representative atom's coordinates.

    ``sequence`` holds one letter per residue plus :data:`_PLACEHOLDER` for residues the numbering says are
    missing; ``coords`` is ``[len(sequence), 3]`` float64 with NaN rows for placeholders and residues without
    the atom."""

    sequence: str
    coords: np.ndarray


def _read_text(path: Path) -> str:
    """Returns a structure file's text (gunzipped when it is gzip data), bounded in size."""
    try:
        raw = path.read_bytes() if path.stat().st_size <= _MAX_BYTES else None
    except IsADirectoryError:
        raise StructureError(f"{path}: is a directory, not a structure file") from None
    except FileNotFoundError:
        raise StructureError(f"structure file not found: {path}") from None
    except OSError as exc:
        raise StructureError(f"{path}: cannot read the structure file ({exc.strerror or exc})") from None
    if raw is None:
        raise StructureError(f"{path}: larger than {_MAX_BYTES >> 20} MiB; not a single-protein structure file")
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
                raw = fh.read(_MAX_BYTES + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise StructureError(f"{path}: cannot decompress gzip data ({exc}); the file is damaged") from None
        if len(raw) > _MAX_BYTES:
            raise StructureError(f"{path}: decompresses to more than {_MAX_BYTES >> 20} MiB; refused")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _is_mmcif(path: Path, text: str) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".cif", ".mmcif")):
        return True
    if name.endswith((".pdb", ".ent")):
        return False
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    return first.startswith("data_")


def read_structure(path: str | os.PathLike):
    """Returns the Biopython ``Structure`` of a PDB or mmCIF file, plain or gzipped (format from the name,
    else from the content). Raises :class:`StructureError` naming the file."""
    import warnings

    from Bio.PDB import MMCIFParser, PDBParser

    path = Path(path)
    text = _read_text(path)
    mmcif = _is_mmcif(path, text)
    parser = MMCIFParser(QUIET=True) if mmcif else PDBParser(QUIET=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = parser.get_structure(path.name, io.StringIO(text))
    except Exception as exc:  # noqa: BLE001 - Biopython raises many types for malformed files
        kind = "mmCIF" if mmcif else "PDB"
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise StructureError(f"{path}: not a readable {kind} file ({detail})") from None
    if len(structure) == 0:
        raise StructureError(f"{path}: holds no model (no ATOM records)")
    return structure


def chain_residues(structure, chain_id: str, where: str = "") -> ChainResidues:
    """Returns the amino acids of chain ``chain_id`` of the first model (see the module docstring)."""
    from Bio.Data.PDBData import protein_letters_3to1_extended

    where = where or structure.id
    model = structure[0]
    if chain_id not in model:
        chains = ", ".join(sorted(c.id for c in model)) or "none"
        raise StructureError(f"{where}: no chain {chain_id!r} (chains: {chains})")
    letters: list[str] = []
    coords: list[np.ndarray] = []
    previous: int | None = None
    nan = np.full(3, np.nan)
    for residue in model[chain_id]:
        het, number, _icode = residue.id
        if het == "W":
            continue
        letter = protein_letters_3to1_extended.get(residue.get_resname().strip().upper())
        if letter is None:  # a ligand or nucleotide: not part of the mapped chain
            continue
        if previous is not None and 1 < number - previous <= MAX_NUMBERING_GAP:
            letters.extend(_PLACEHOLDER * (number - previous - 1))
            coords.extend([nan] * (number - previous - 1))
        previous = number
        atom = "CA" if letter == "G" else "CB"
        letters.append(letter)
        coords.append(residue[atom].coord.astype(np.float64) if atom in residue else nan)
    if not any(x != _PLACEHOLDER for x in letters):
        raise StructureError(f"{where}: chain {chain_id!r} holds no amino acids")
    return ChainResidues("".join(letters), np.asarray(coords, dtype=np.float64).reshape(-1, 3))


def _aligner():
    from Bio import Align
    from Bio.Align import substitution_matrices

    aligner = Align.PairwiseAligner()
    aligner.mode = "global"
    aligner.substitution_matrix = substitution_matrices.load("BLOSUM62")
    aligner.open_gap_score = -10.0
    aligner.extend_gap_score = -0.5
    aligner.open_end_gap_score = 0.0  # free end gaps: a chain may cover part of the query, or more
    aligner.extend_end_gap_score = 0.0
    return aligner


def map_onto_query(chain_sequence: str, query: str) -> np.ndarray:
    """Returns ``[len(query)]`` int64: for each query character the index of the chain residue aligned to it,
    or -1. Gap characters of the query (``-``, ``.``) are never mapped; letters are compared uppercase."""
    query = query.upper()
    residues = np.array([k for k, c in enumerate(query) if c not in "-."], dtype=np.int64)
    seq = "".join(query[k] for k in residues)
    mapping = np.full(len(query), -1, dtype=np.int64)
    if not seq:
        return mapping
    # Unknown letters (B, Z, U, O, J) are scored as X by BLOSUM62
    clean = "".join(c if c in "ARNDCQEGHILKMFPSTWYVX" else "X" for c in seq)
    alignment = _aligner().align(chain_sequence, clean)[0]
    for (t0, t1), (q0, q1) in zip(*alignment.aligned):
        mapping[residues[q0:q1]] = np.arange(t0, t1)
    return mapping


def maps_from_coords(coords: np.ndarray, cutoff: float = CONTACT_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(distance [L, L] float32 with NaN where a row of coords is NaN, contacts [L, L] bool)``."""
    diff = coords[:, None, :] - coords[None, :, :]
    distance = np.sqrt((diff**2).sum(-1)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        contacts = distance < cutoff  # NaN compares False
    return distance, contacts


def true_maps(path: str | os.PathLike, chain: str, query: str, *, min_identity: float = 0.9,
              cutoff: float = CONTACT_DISTANCE) -> StructureMaps:
    """Returns the true maps of ``query`` (the MSA's query row, as aligned) from chain ``chain`` of a structure.

    Raises:
        StructureError: unreadable file, no such chain, no amino acids, nothing aligned, or an identity of the
            mapping below ``min_identity``; the message names the file and chain.
    """
    path = Path(path)
    where = f"{path}:{chain}"
    residues = chain_residues(read_structure(path), chain, str(path))
    mapping = map_onto_query(residues.sequence, query)
    has_coords = ~np.isnan(residues.coords).any(axis=1)
    query_upper = query.upper()
    mapped = np.flatnonzero(mapping >= 0)
    pairs = [(k, mapping[k]) for k in mapped if residues.sequence[mapping[k]] != _PLACEHOLDER]
    if not pairs:
        raise StructureError(f"{where}: no residue of the chain aligns to the MSA's query")
    same = sum(query_upper[k] == residues.sequence[m] for k, m in pairs)
    identity = same / len(pairs)
    if identity < min_identity:
        raise StructureError(
            f"{where}: the chain's sequence matches the MSA's query at {identity:.0%} identity over {len(pairs)} "
            f"aligned residues, below {min_identity:.0%}; is this the query's structure? (lower --min-identity "
            "to accept a homolog)"
        )
    coords = np.full((len(query), 3), np.nan)
    for k, m in pairs:
        if has_coords[m]:
            coords[k] = residues.coords[m]
    distance, contacts = maps_from_coords(coords, cutoff)
    observed = ~np.isnan(coords).any(axis=1)
    return StructureMaps(distance=distance, contacts=contacts, observed=observed, identity=float(identity),
                         aligned=len(pairs), chain_residues=sum(c != _PLACEHOLDER for c in residues.sequence),
                         source=where)


def read_contact_list(path: str | os.PathLike, length: int) -> StructureMaps:
    """Returns true maps from a contact list CSV (``i,j`` 1-based query columns, as ``msaformer demo`` writes
    in ``truth/``): every column observed, the listed pairs in contact, no distances (NaN)."""
    import csv

    from msaformer.files import read_user_text

    path = Path(path)
    text = read_user_text(path, "contact list")
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if header[:2] != ["i", "j"]:
        raise StructureError(f"{path}: a contact list needs the header 'i,j' (1-based query columns), got {header}")
    contacts = np.zeros((length, length), dtype=bool)
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            i, j = int(row[0]), int(row[1])
        except (ValueError, IndexError):
            raise StructureError(f"{path}: line {line}: expected two integers i,j, got {row}") from None
        if not (1 <= i <= length and 1 <= j <= length):
            raise StructureError(f"{path}: line {line}: pair ({i}, {j}) outside the query's columns 1..{length}")
        contacts[i - 1, j - 1] = contacts[j - 1, i - 1] = True
    return StructureMaps(distance=np.full((length, length), np.nan, dtype=np.float32), contacts=contacts,
                         observed=np.ones(length, dtype=bool), identity=1.0, aligned=length,
                         chain_residues=length, source=str(path))


__all__ = ["CONTACT_DISTANCE", "StructureError", "StructureMaps", "chain_residues", "map_onto_query",
           "maps_from_coords", "read_contact_list", "read_structure", "true_maps"]
