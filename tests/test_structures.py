"""True maps from structures (msaformer.structures): hand-computed distances on a small PDB file, the aligner
mapping with offsets, missing residues and insertion codes, mmCIF and gzip input, one-line errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from msaformer.structures import StructureError, map_onto_query, read_contact_list, true_maps
from tests.paths import STRUCTURES, needs_shared


def _atom(serial, name, resname, chain, resseq, icode, xyz, het=False):
    record = "HETATM" if het else "ATOM  "
    element = name[0]
    return (f"{record}{serial:5d} {name:<4s} {resname:3s} {chain}{resseq:4d}{icode:1s}   "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}  1.00 20.00          {element:>2s}")


# auth numbering starts at 10 (an offset of 2 against the query); residue 13 is missing (numbering gap);
# 14A follows 14 (insertion code); ALA 14 has no CB (masked); GLY 12 is measured at its CA.
RESIDUES = [  # (resname, resseq, icode, CA, CB or None)
    ("MET", 10, "", (0.0, 0.0, 0.0), (0.5, 1.0, 0.0)),
    ("LYS", 11, "", (3.8, 0.0, 0.0), (4.0, 1.5, 0.2)),
    ("GLY", 12, "", (7.6, 0.0, 0.0), None),
    ("ALA", 14, "", (11.0, 2.0, 0.0), None),
    ("VAL", 14, "A", (13.0, 5.0, 0.0), (12.0, 6.0, 1.0)),
    ("LEU", 15, "", (10.0, 8.0, 0.0), (9.0, 7.0, 1.5)),
    ("TRP", 16, "", (6.5, 9.0, 0.0), (5.0, 8.0, 0.5)),
]
QUERY = "SSMKGEAVLW"  # S S | M K G (E: residue 13, not in the file) A V L W


def _pdb_text(chain="A", with_ca_of_gly=True):
    lines, serial = [], 1
    for resname, resseq, icode, ca, cb in RESIDUES:
        lines.append(_atom(serial, "N", resname, chain, resseq, icode, (ca[0] - 1.0, ca[1], ca[2])))
        lines.append(_atom(serial + 1, "CA", resname, chain, resseq, icode, ca))
        if cb is not None:
            lines.append(_atom(serial + 2, "CB", resname, chain, resseq, icode, cb))
        serial += 3
    lines.append(_atom(serial, "O", "HOH", chain, 101, "", (20.0, 20.0, 20.0), het=True))
    lines.append(_atom(serial + 1, "O", "HOH", "W", 1, "", (30.0, 20.0, 20.0), het=True))
    return "\n".join(lines + ["TER", "END"]) + "\n"


def _expected():
    """The maps by hand: query column -> representative atom (CB; CA for Gly), None where not observed."""
    atoms = [None, None]  # S S
    for resname, _, _, ca, cb in RESIDUES[:3]:
        atoms.append(ca if resname == "GLY" else cb)
    atoms.append(None)  # E: residue 13 missing
    atoms.append(None)  # A: no CB
    for _, _, _, _, cb in RESIDUES[4:]:
        atoms.append(cb)
    distance = np.full((10, 10), np.nan)
    for a in range(10):
        for b in range(10):
            if atoms[a] is not None and atoms[b] is not None:
                distance[a, b] = sum((p - q) ** 2 for p, q in zip(atoms[a], atoms[b])) ** 0.5
    return distance, np.array([x is not None for x in atoms])


@pytest.fixture
def pdb_file(tmp_path):
    path = tmp_path / "toy.pdb"
    path.write_text(_pdb_text())
    return path


def test_maps_equal_a_hand_computation(pdb_file, tmp_path):
    maps = true_maps(pdb_file, "A", QUERY)
    distance, observed = _expected()
    assert maps.observed.tolist() == observed.tolist()
    np.testing.assert_allclose(maps.distance, distance, atol=1e-3)  # NaN where masked, in the same places
    with np.errstate(invalid="ignore"):
        assert maps.contacts.tolist() == (distance < 8.0).tolist()
    assert maps.identity == 1.0 and maps.aligned == 7 and maps.chain_residues == 7
    assert maps.valid[2, 3] and not maps.valid[2, 5] and not maps.valid[6, 7]
    # the same file gzipped, and as mmCIF (written by Biopython, read by name and by content)
    gz = tmp_path / "toy.pdb.gz"
    gz.write_bytes(gzip.compress(pdb_file.read_bytes()))
    from Bio.PDB import MMCIFIO, PDBParser

    cif = tmp_path / "toy.cif"
    io = MMCIFIO()
    io.set_structure(PDBParser(QUIET=True).get_structure("toy", pdb_file))
    io.save(str(cif))
    unnamed = tmp_path / "toy_structure.gz"
    unnamed.write_bytes(gzip.compress(cif.read_bytes()))
    for other in (gz, cif, unnamed):
        again = true_maps(other, "A", QUERY)
        np.testing.assert_array_equal(again.contacts, maps.contacts)
        np.testing.assert_allclose(again.distance, maps.distance, atol=1e-3)


def test_numbering_gaps_place_missing_residues():
    # MKA[A]AL: residue 4 missing. By sequence alone the gap could sit at 3, 4 or 5; the numbering says 4.
    assert map_onto_query("MKAXAL", "MKAAAL").tolist() == [0, 1, 2, 3, 4, 5]
    assert map_onto_query("KAL", "MKAL-").tolist() == [-1, 0, 1, 2, -1]  # offset, query gap never mapped


def test_missing_residue_in_a_repeat_is_masked_where_the_numbering_says(tmp_path):
    lines, serial = [], 1
    for k, (resname, number) in enumerate([("MET", 1), ("LYS", 2), ("ALA", 3), ("ALA", 5), ("LEU", 6)]):
        ca = (3.8 * k, 0.0, 0.0)
        lines.append(_atom(serial, "CA", resname, "B", number, "", ca))
        lines.append(_atom(serial + 1, "CB", resname, "B", number, "", (ca[0], 1.5, 0.0)))
        serial += 2
    path = tmp_path / "repeat.pdb"
    path.write_text("\n".join(lines) + "\nEND\n")
    maps = true_maps(path, "B", "MKAAAL")
    assert maps.observed.tolist() == [True, True, True, False, True, True]
    assert maps.distance[2, 4] == pytest.approx(3.8)  # residues 3 and 5: one step apart in the file


def test_errors_name_the_file_and_chain(pdb_file, tmp_path):
    with pytest.raises(StructureError, match=r"toy\.pdb: no chain 'C' \(chains: A, W\)"):
        true_maps(pdb_file, "C", QUERY)
    with pytest.raises(StructureError, match=r"toy\.pdb: chain 'W' holds no amino acids"):
        true_maps(pdb_file, "W", QUERY)
    with pytest.raises(StructureError, match=r"toy\.pdb:A: .* identity .* below 90%"):
        true_maps(pdb_file, "A", "SSLRAEGIMY")  # a homolog: similar, not identical
    assert true_maps(pdb_file, "A", "SSMKGEAVLF", min_identity=0.8).identity == pytest.approx(6 / 7)
    junk = tmp_path / "junk.cif"
    junk.write_text("data_x\nloop_\n_atom_site.id\n")
    with pytest.raises(StructureError, match="junk.cif"):
        true_maps(junk, "A", QUERY)
    broken = tmp_path / "broken.pdb.gz"
    broken.write_bytes(gzip.compress(b"ATOM" * 100)[:-6])  # truncated: no trailer
    with pytest.raises(StructureError, match="broken.pdb.gz: cannot decompress"):
        true_maps(broken, "A", QUERY)
    with pytest.raises(StructureError, match="structure file not found"):
        true_maps(tmp_path / "none.pdb", "A", QUERY)


def test_contact_list(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("i,j\n1,8\n3,12\n")
    maps = read_contact_list(path, 12)
    assert maps.contacts.sum() == 4 and maps.contacts[0, 7] and maps.contacts[11, 2] and maps.observed.all()
    path.write_text("i,j\n1,13\n")
    with pytest.raises(StructureError, match=r"c.csv: line 2: pair \(1, 13\) outside"):
        read_contact_list(path, 12)


@needs_shared
def test_shipped_structures_match_their_sources_table():
    from msaformer.data.parsers import read_alignments

    # counts of long-range true contacts in ../shared/datasets/structures/SOURCES.md, made by another script
    for structure, chain, msa, long_range, observed in (
        ("1a3a.pdb.gz", "A", STRUCTURES.parent / "msa" / "esm" / "1a3a_1_A.a3m", 229, 145),
        ("1k0n.pdb.gz", "A", STRUCTURES / "msa" / "1k0n_A_afcluster_1K0N_a2a25.a3m.gz", 301, 226),
        ("2q2k.cif.gz", "A", STRUCTURES.parent / "msa" / "openfold" / "2q2k_A_bfd_uniclust_hits.a3m", 0, 45),
    ):
        query = read_alignments(msa)[0].query
        maps = true_maps(STRUCTURES / structure, chain, query)
        i, j = np.triu_indices(maps.length, 24)
        assert (int(maps.contacts[i, j].sum()), int(maps.observed.sum())) == (long_range, observed), structure
