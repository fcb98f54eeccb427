"""Coevolution baselines (msaformer.contacts.coevolution): a Potts model fitted to an MSA sampled from a known
small Potts model recovers its planted couplings; sequence weights, APC and MI checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msaformer.contacts.coevolution import (AMINO, PottsOptions, apc, fit_potts, mi_contacts, msa_states,
                                            sequence_weights)

LENGTH, DEPTH = 13, 1500
PLANTED = [(0, 7), (2, 11), (4, 12), (5, 9)]


def _zero_sum(J):
    """Returns couplings in the zero-sum gauge (row and column means removed): comparable across fits."""
    return J - J.mean(-1, keepdims=True) - J.mean(-2, keepdims=True) + J.mean((-1, -2), keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """Returns (ASCII tokens [N, L], couplings [K, 20, 20]) sampled by Gibbs sweeps from a Potts model with
    couplings on PLANTED only (20 amino-acid states)."""
    rng = np.random.default_rng(7)
    h = rng.normal(0.0, 0.5, size=(LENGTH, 20))
    couplings = rng.normal(0.0, 1.2, size=(len(PLANTED), 20, 20))
    x = rng.integers(0, 20, size=(DEPTH, LENGTH))
    for _ in range(40):
        for site in range(LENGTH):
            energy = np.repeat(h[site][None], DEPTH, axis=0)  # (N, 20)
            for k, (i, j) in enumerate(PLANTED):
                if site == i:
                    energy += couplings[k][:, x[:, j]].T
                elif site == j:
                    energy += couplings[k][x[:, i], :]
            p = np.exp(energy - energy.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            x[:, site] = (rng.random((DEPTH, 1)) > np.cumsum(p, 1)).sum(1).clip(max=19)
    tokens = np.frombuffer(AMINO.encode(), dtype=np.uint8)[x]
    return tokens, couplings


def test_potts_recovers_planted_couplings(planted):
    tokens, couplings = planted
    model = fit_potts(tokens, PottsOptions(iterations=40), device="cpu")
    scores = model.scores()
    i, j = np.triu_indices(LENGTH, 1)
    top = sorted(zip(i[np.argsort(-scores[i, j])][:4].tolist(), j[np.argsort(-scores[i, j])][:4].tolist()))
    assert top == sorted(PLANTED)
    assert np.allclose(scores, scores.T) and np.all(np.diag(scores) == 0)
    fitted = model.J.numpy()
    for k, (a, b) in enumerate(PLANTED):  # the couplings themselves, in one gauge, not only their norms
        r = np.corrcoef(_zero_sum(fitted[a, :20, b, :20]).ravel(), _zero_sum(couplings[k]).ravel())[0, 1]
        assert r > 0.7, (a, b, r)  # measured 0.79-0.83 with 1,500 rows (400 numbers per pair)
    unrelated = np.corrcoef(_zero_sum(fitted[0, :20, 7, :20]).ravel(), _zero_sum(couplings[1]).ravel())[0, 1]
    assert abs(unrelated) < 0.3
    assert model.J[3, :, 3, :].abs().max() == 0  # no self-coupling


def test_matrix_product_path_fits_the_same_model(planted):
    """The GPU's way of summing the couplings (onehot @ J), run on the CPU, gives the gather's fit."""
    tokens, _ = planted
    gather = fit_potts(tokens[:300], PottsOptions(iterations=5, gather=True), device="cpu")
    product = fit_potts(tokens[:300], PottsOptions(iterations=5, gather=False), device="cpu")
    np.testing.assert_allclose(gather.scores(), product.scores(), atol=1e-4)
    assert gather.loss == pytest.approx(product.loss, rel=1e-5)


def test_mi_ranks_planted_pairs_first(planted):
    tokens, _ = planted
    scores = mi_contacts(tokens, device="cpu")
    i, j = np.triu_indices(LENGTH, 1)
    best = set(zip(i[np.argsort(-scores[i, j])][:4].tolist(), j[np.argsort(-scores[i, j])][:4].tolist()))
    assert len(best & set(PLANTED)) >= 3


def test_sequence_weights_and_states_by_hand():
    rows = [b"ACDEFGHIKL", b"ACDEFGHIKL", b"ACDEFGHIKV", b"WWWWWWWWWW", b"--XBZWWWWW"]
    tokens = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(5, 10)
    states = msa_states(tokens)
    assert states[4, :5].tolist() == [20, 20, 20, 20, 20] and states[0, 0] == 0 and states[3, 0] == 18
    weights = sequence_weights(torch.from_numpy(states), identity=0.8).numpy()
    # rows 0-2 are >= 90 % identical to each other; row 3 and row 4 share 5 of 10 positions (< 80 %)
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3, 1.0, 1.0])


def test_apc_by_hand():
    raw = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    row = torch.tensor([1.5, 2.0, 2.5])  # off-diagonal row means
    expected = raw - row[:, None] * row[None, :] / 2.0  # total off-diagonal mean = 2
    expected.fill_diagonal_(0.0)
    torch.testing.assert_close(apc(raw), expected)


def test_a_fit_too_large_for_the_memory_is_refused_in_one_line():
    from msaformer.errors import MsaformerError

    wide = np.full((4, 3000), ord("A"), dtype=np.uint8)  # potts would need ~440 GiB
    with pytest.raises(MsaformerError, match=r"potts on 4 rows x 3000 columns needs about \d+\.\d GiB"):
        fit_potts(wide, device="cpu")
