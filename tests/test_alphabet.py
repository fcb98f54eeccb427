"""The MSA alphabet matches fair-esm's, and the ASCII lookup is right."""

from __future__ import annotations

import numpy as np
import pytest

from msaformer.data import alphabet as A


def test_tokens_identical_to_fair_esm():
    esm = pytest.importorskip("esm")
    ref = esm.Alphabet.from_architecture("msa_transformer")
    assert list(A.TOKENS) == ref.all_toks
    assert (A.CLS_IDX, A.PAD_IDX, A.EOS_IDX, A.UNK_IDX, A.MASK_IDX) == (
        ref.cls_idx, ref.padding_idx, ref.eos_idx, ref.unk_idx, ref.mask_idx,
    )  # fmt: skip


def test_fixed_ids():
    assert A.TOKENS[:4] == ("<cls>", "<pad>", "<eos>", "<unk>")
    assert A.TOKENS[4] == "L" and A.TOKENS[30] == "-" and A.TOKENS[31] == "<null_1>" and A.TOKENS[32] == "<mask>"
    assert len(A.RESIDUE_IDS) == 20 and sorted(A.TOKENS[i] for i in A.RESIDUE_IDS) == list("ACDEFGHIKLMNPQRSTVWY")


def test_ascii_to_ids_and_unknown_letters():
    text = np.frombuffer(b"LAG-.XBJ*wa", dtype=np.uint8)
    ids = A.ascii_to_ids(text)
    assert ids.dtype == np.int64
    expected = [A.TOKEN_TO_ID[c] for c in "LAG-.XB"] + [A.X_IDX, A.X_IDX, A.TOKEN_TO_ID["W"], A.TOKEN_TO_ID["A"]]
    assert ids.tolist() == expected
    with pytest.raises(TypeError):
        A.ascii_to_ids(np.array([1, 2], dtype=np.int32))


def test_encode_msa_prepends_cls_column():
    msa = np.frombuffer(b"MKV-QA--", dtype=np.uint8).reshape(2, 4)
    ids = A.encode_msa(msa)
    assert ids.shape == (2, 5)
    assert (ids[:, 0] == A.CLS_IDX).all()
    assert A.decode(ids[0]) == "<cls>MKV-"
    assert A.decode(ids[1]) == "<cls>QA--"


def test_matches_fair_esm_batch_converter():
    esm = pytest.importorskip("esm")
    ref = esm.Alphabet.from_architecture("msa_transformer")
    rows = ["MKVLAAGIDEFHW", "MK-LAPG.DEFYC"]
    _, _, tokens = ref.get_batch_converter()([[("a", rows[0]), ("b", rows[1])]])
    ours = A.encode_msa(np.frombuffer("".join(rows).encode(), dtype=np.uint8).reshape(2, -1))
    assert tokens[0].numpy().tolist() == ours.tolist()
