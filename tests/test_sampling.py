"""Row selection for training and inference, column windows and the token budget (msaformer.data.sampling)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msaformer.data.msa import Msa
from msaformer.data.sampling import (
    STRATEGIES,
    SamplingOptions,
    content_rng,
    crop_window,
    greedy_diverse,
    identity_filter,
    rows_in_budget,
    sample_msa,
    select_rows,
    subsample,
)
from msaformer.errors import ConfigError, MsaformerError

LETTERS = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY-", dtype=np.uint8)


def random_msa(rng, depth, length, gap_rate=0.2):
    tokens = LETTERS[rng.integers(0, 20, size=(depth, length))]
    tokens[rng.random((depth, length)) < gap_rate] = ord("-")
    return tokens


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(1, 41),
    length=st.integers(1, 53),
    max_len=st.integers(1, 29),
    extra_tokens=st.integers(0, 300),
    strategy=st.sampled_from(STRATEGIES),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_strategy_keeps_query_first_and_respects_token_budget(depth, length, max_len, extra_tokens, strategy, seed):
    rng = np.random.default_rng(seed)
    tokens = random_msa(rng, depth, length)
    options = SamplingOptions(strategy=strategy, max_len=max_len, max_tokens=max_len + 1 + extra_tokens,
                              max_identity=0.8, min_coverage=0.3)
    rows, cols = sample_msa(tokens, options, rng)
    assert rows[0] == 0 and (rows[1:] != 0).all() or len(rows) == 1
    assert rows.min() >= 0 and rows.max() < depth
    width = cols.stop - cols.start
    assert 0 <= cols.start and cols.stop <= length and width == min(length, max_len)
    assert len(rows) * (width + 1) <= options.max_tokens
    if strategy != "random_with_replacement":
        assert len(set(rows.tolist())) == len(rows)
    if strategy in ("first", "random", "greedy_diverse", "random_with_replacement"):
        # these fill the budget (or take every row)
        assert len(rows) == min(depth, options.max_tokens // (width + 1))


def test_max_rows_caps_rows():
    tokens = random_msa(np.random.default_rng(0), 37, 13)
    rows, _ = sample_msa(tokens, SamplingOptions(max_len=13, max_tokens=10_000, max_rows=7), np.random.default_rng(1))
    assert len(rows) == 7 and rows[0] == 0


def test_rows_in_budget_counts_cls_column():
    assert rows_in_budget(depth=1000, n_cols=63, max_tokens=2**14) == 256
    assert rows_in_budget(depth=100, n_cols=1023, max_tokens=2**14) == 16
    assert rows_in_budget(depth=5, n_cols=9, max_tokens=10**6) == 5
    assert rows_in_budget(depth=5, n_cols=9, max_tokens=3) == 1  # never less than the query


def test_crop_window_is_uniform_and_in_bounds():
    rng = np.random.default_rng(0)
    starts = [crop_window(17, 5, rng)[0] for _ in range(4000)]
    assert min(starts) == 0 and max(starts) == 12
    counts = np.bincount(starts, minlength=13)
    assert counts.min() > 200  # ~308 each
    assert crop_window(4, 9, rng) == (0, 4)


def test_greedy_diverse_matches_bruteforce():
    rng = np.random.default_rng(5)
    tokens = random_msa(rng, 19, 11, gap_rate=0.4)
    got = greedy_diverse(tokens, 7).tolist()
    chosen = [0]
    while len(chosen) < 7:
        best, best_score = None, -1.0
        for i in range(len(tokens)):
            if i in chosen:
                continue
            score = np.mean([(tokens[i] != tokens[j]).sum() for j in chosen])
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)
    assert got == sorted(chosen)  # the rows chosen, in alignment order (fair-esm's greedy_select sorts too)


def test_greedy_diverse_prefers_distinct_rows():
    q = np.frombuffer(b"ACDEFGHIK", dtype=np.uint8)
    far = np.frombuffer(b"WWWWWWWWW", dtype=np.uint8)
    tokens = np.stack([q, q, q, far, q])
    assert greedy_diverse(tokens, 2).tolist() == [0, 3]


def test_identity_filter_drops_near_duplicates_and_low_coverage():
    rows = [b"ACDEFGHIKL", b"ACDEFGHIKL", b"ACDEFGHIKW", b"WWWWWGHIKL", b"AC--------", b"LKIHGFEDCA"]
    tokens = np.stack([np.frombuffer(r, dtype=np.uint8) for r in rows])
    kept = identity_filter(tokens, max_identity=0.85, min_coverage=0.5)
    # 1 is identical to the query, 2 is 90% identical, 4 covers 20% of the query
    assert kept.tolist() == [0, 3, 5]
    assert identity_filter(tokens, max_identity=1.0, min_coverage=0.0).tolist() == [0, 1, 2, 3, 4, 5]
    # identity counts columns where both rows have a residue: row 4 matches the query on both of its own
    assert identity_filter(tokens, max_identity=0.99, min_coverage=0.0).tolist() == [0, 2, 3, 5]
    assert identity_filter(tokens, max_identity=0.85, min_coverage=0.5, max_kept=2).tolist() == [0, 3]


def test_identity_filter_strategy_samples_only_kept_rows():
    base = np.frombuffer(b"ACDEFGHIKLMNPQ", dtype=np.uint8)
    rng = np.random.default_rng(2)
    tokens = np.stack([base] * 9 + [random_msa(rng, 1, 14, 0.0)[0] for _ in range(8)])
    for seed in range(20):
        rows = select_rows(tokens, 5, "identity_filter", np.random.default_rng(seed),
                           SamplingOptions(strategy="identity_filter", max_identity=0.9, min_coverage=0.0))
        assert rows[0] == 0 and not set(rows[1:].tolist()) & set(range(1, 9))


def test_same_generator_state_gives_same_sample():
    tokens = random_msa(np.random.default_rng(0), 23, 31)
    options = SamplingOptions(max_len=13, max_tokens=14 * 5)
    a = sample_msa(tokens, options, np.random.default_rng(7))
    b = sample_msa(tokens, options, np.random.default_rng(7))
    assert a[0].tolist() == b[0].tolist() and a[1] == b[1]


def test_options_are_validated():
    with pytest.raises(ConfigError, match="unknown row selection strategy 'hhblits'"):
        SamplingOptions(strategy="hhblits")
    with pytest.raises(ConfigError, match="max_tokens_per_msa"):
        SamplingOptions(max_len=63, max_tokens=32)
    with pytest.raises(ConfigError, match="max_identity"):
        SamplingOptions(max_identity=0.0)


# ---------------------------------------------------------------- inference subsampling
RNG = np.random.default_rng(0)  # the deterministic strategies draw nothing


def _fair_esm_greedy_select(array: np.ndarray, num_seqs: int) -> tuple[list[int], bool]:
    """fair-esm's examples/contact_prediction.ipynb ``greedy_select`` (mode="max"); also returns whether a
    step had a tie (float rounding then decides fair-esm's pick, integer order decides ours)."""
    all_indices = np.arange(len(array))
    indices = [0]
    tie = False
    pairwise_distances = np.zeros((0, len(array)))
    for _ in range(num_seqs - 1):
        dist = (array[indices[-1:]][:, None, :] != array[None]).mean(-1)  # scipy's cdist(..., "hamming")
        pairwise_distances = np.concatenate([pairwise_distances, dist])
        shifted_distance = np.delete(pairwise_distances, indices, axis=1).mean(0)
        shifted_index = np.argmax(shifted_distance)
        tie |= int(np.sum(np.isclose(shifted_distance, shifted_distance[shifted_index], rtol=0, atol=1e-9))) > 1
        index = np.delete(all_indices, indices)[shifted_index]
        indices.append(int(index))
    return sorted(indices), tie


@pytest.mark.parametrize("seed", range(4))
def test_greedy_diverse_matches_fair_esm(seed):
    rng = np.random.default_rng(seed)
    n, length = 23 + seed, 1001
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY-", dtype=np.uint8)
    tokens = np.repeat(rng.choice(letters, size=(1, length)), n, axis=0)
    # each row mutated at its own rate: widely spread distances, few exact ties at the top
    mutate = rng.random((n, length)) < rng.uniform(0.05, 0.9, size=(n, 1))
    mutate[0] = False
    tokens[mutate] = rng.choice(letters, size=int(mutate.sum()))
    checked = 0
    for k in (2, 3, 5, 7, 11, n - 1):
        expected, tie = _fair_esm_greedy_select(tokens, k)
        if not tie:
            assert select_rows(tokens, k, "greedy_diverse", RNG).tolist() == expected
            checked += 1
    assert checked >= 2  # most cases have no tie at the top
    assert select_rows(tokens, n + 3, "greedy_diverse", RNG).tolist() == list(range(n))
    closest = np.argsort((tokens != tokens[0]).sum(1))[1:4]  # near-copies of the query are avoided
    assert not set(select_rows(tokens, 7, "greedy_diverse", RNG).tolist()) & set(closest.tolist())


def test_subsample_modes_keep_query_first_and_are_deterministic():
    rng = np.random.default_rng(0)
    tokens = rng.choice(np.frombuffer(b"ACDEFG-", dtype=np.uint8), size=(29, 11))
    msa = Msa([f"s{i}" for i in range(29)], tokens, np.zeros_like(tokens))
    first = subsample(msa, 7, "first")
    assert first.names == [f"s{i}" for i in range(7)]
    r1, r2 = subsample(msa, 7, "random", seed=5), subsample(msa, 7, "random", seed=5)
    assert r1.names == r2.names and r1.names[0] == "s0" and len(set(r1.names)) == 7
    assert any(subsample(msa, 7, "random", seed=s).names != r1.names for s in range(6, 10))
    assert select_rows(tokens, 7, "random", content_rng(tokens, 5)).tolist() == sorted(int(n[1:]) for n in r1.names)
    assert subsample(msa, None, "greedy_diverse") is msa
    with pytest.raises(MsaformerError, match="unknown row selection strategy 'best'"):
        subsample(msa, 3, "best")
    with pytest.raises(MsaformerError, match="at least 1"):
        subsample(msa, 0, "first")
