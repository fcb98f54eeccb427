"""The MSA token vocabulary: fair-esm's ``msa_transformer`` alphabet, same tokens, same ids.

Shards store aligned letters as ASCII ``uint8``; :func:`ascii_to_ids` turns them into token ids with one
vectorised table lookup, and :func:`encode_msa` adds the ``<cls>`` column the model expects in front of
every row.
"""

from __future__ import annotations

import numpy as np

#: The 33 tokens in id order (identical to ``esm.Alphabet.from_architecture("msa_transformer").all_toks``).
TOKENS: tuple[str, ...] = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C",
    "X", "B", "U", "Z", "O", ".", "-",
    "<null_1>", "<mask>",
)  # fmt: skip

CLS_IDX = 0
PAD_IDX = 1
EOS_IDX = 2
UNK_IDX = 3
MASK_IDX = 32
GAP_IDX = TOKENS.index("-")
X_IDX = TOKENS.index("X")

#: Id of each token string.
TOKEN_TO_ID: dict[str, int] = {tok: i for i, tok in enumerate(TOKENS)}

#: Ids of the 20 standard amino acids (random replacements when masking).
RESIDUE_IDS: tuple[int, ...] = tuple(TOKEN_TO_ID[a] for a in "ACDEFGHIKLMNPQRSTVWY")

VOCAB_SIZE = len(TOKENS)


def _build_ascii_table() -> np.ndarray:
    """Returns a 256-entry lookup from ASCII code to token id; unknown letters map to ``X``."""
    table = np.full(256, X_IDX, dtype=np.int64)
    for tok, idx in TOKEN_TO_ID.items():
        if len(tok) == 1:
            table[ord(tok)] = idx
            if tok.isalpha():
                table[ord(tok.lower())] = idx  # a3m insertions are lowercase; treat them as the residue
    return table


#: ``_ASCII_TO_ID[c]`` is the token id of ASCII character ``c``.
_ASCII_TO_ID = _build_ascii_table()
_ASCII_TO_ID.setflags(write=False)


def ascii_to_ids(tokens_uint8: np.ndarray) -> np.ndarray:
    """Returns the int64 token ids of an array of ASCII codes (any shape); letters outside the vocabulary -> X."""
    arr = np.asarray(tokens_uint8)
    if arr.dtype != np.uint8:
        raise TypeError(f"ascii_to_ids expects uint8 ASCII codes, got {arr.dtype}")
    return _ASCII_TO_ID[arr]


def encode_msa(tokens_uint8: np.ndarray) -> np.ndarray:
    """Returns int64 ids ``[N, L + 1]`` of an aligned ``[N, L]`` ASCII array, a ``<cls>`` column prepended."""
    arr = np.asarray(tokens_uint8)
    if arr.ndim != 2:
        raise ValueError(f"encode_msa expects a 2-D [N, L] array, got shape {arr.shape}")
    out = np.empty((arr.shape[0], arr.shape[1] + 1), dtype=np.int64)
    out[:, 0] = CLS_IDX
    out[:, 1:] = ascii_to_ids(arr)
    return out


def decode(ids) -> str:
    """Returns the text of a 1-D sequence of token ids (special tokens written as ``<name>``)."""
    return "".join(TOKENS[int(i)] for i in ids)
