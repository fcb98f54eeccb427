"""MLM masking and batch padding (msaformer.data.collate)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msaformer.data.alphabet import CLS_IDX, MASK_IDX, PAD_IDX, RESIDUE_IDS
from msaformer.data.collate import IGNORE_INDEX, MsaSample, collate_msas, mask_tokens


def msa_ids(rng, n, length):
    body = rng.integers(4, 31, size=(n, length))  # residues, X/B/U/Z/O, '.', '-'
    return np.concatenate([np.full((n, 1), CLS_IDX), body], axis=1).astype(np.int64)


def test_mask_rates_follow_80_10_10():
    rng = np.random.default_rng(0)
    ids = msa_ids(rng, 61, 97)
    inputs, targets = mask_tokens(ids, rng)
    chosen = targets != IGNORE_INDEX
    real = ids[:, 1:].size
    assert abs(chosen.sum() / real - 0.15) < 0.01
    masked = inputs[chosen] == MASK_IDX
    unchanged = inputs[chosen] == ids[chosen]
    random_residue = ~masked & ~unchanged
    assert abs(masked.mean() - 0.8) < 0.03
    # random replacements that happen to equal the original count as unchanged: 10% + 10% / 20 expected
    assert abs(unchanged.mean() - (0.1 + 0.1 / 20)) < 0.02
    assert np.isin(inputs[chosen][random_residue], RESIDUE_IDS).all()
    np.testing.assert_array_equal(targets[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])


def test_special_tokens_are_never_masked_and_one_position_is_forced():
    rng = np.random.default_rng(1)
    ids = np.array([[CLS_IDX, 5, 6, PAD_IDX], [CLS_IDX, PAD_IDX, PAD_IDX, PAD_IDX]])
    for _ in range(50):
        inputs, targets = mask_tokens(ids, rng, mask_prob=0.01)
        assert (targets != IGNORE_INDEX).sum() >= 1  # forced: every sample carries a loss
        assert (targets[:, 0] == IGNORE_INDEX).all() and (targets[ids == PAD_IDX] == IGNORE_INDEX).all()
        assert (inputs[:, 0] == CLS_IDX).all() and (inputs[ids == PAD_IDX] == PAD_IDX).all()


@settings(max_examples=40, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 13)), min_size=1, max_size=5),
       seed=st.integers(0, 2**31))
def test_collate_pads_and_unpads_exactly(shapes, seed):
    rng = np.random.default_rng(seed)
    samples = []
    for i, (n, length) in enumerate(shapes):
        tokens, targets = mask_tokens(msa_ids(rng, n, length), rng)
        samples.append(MsaSample(tokens, targets, 10 + i))
    batch = collate_msas(samples)
    depth = max(n for n, _ in shapes)
    width = max(length for _, length in shapes) + 1
    assert tuple(batch.tokens.shape) == (len(shapes), depth, width) == tuple(batch.targets.shape)
    assert batch.n_tokens == sum(n * (length + 1) for n, length in shapes)
    pad = np.ones((len(shapes), depth, width), dtype=bool)
    for b, (n, length) in enumerate(shapes):
        np.testing.assert_array_equal(batch.tokens[b, :n, : length + 1].numpy(), samples[b].tokens)
        np.testing.assert_array_equal(batch.targets[b, :n, : length + 1].numpy(), samples[b].targets)
        pad[b, :n, : length + 1] = False
    assert (batch.tokens.numpy()[pad] == PAD_IDX).all()  # padded rows are all <pad>: the model's convention
    assert (batch.targets.numpy()[pad] == IGNORE_INDEX).all()
    assert (batch.tokens.numpy()[~pad] != PAD_IDX).all()
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.n_tokens = 0
