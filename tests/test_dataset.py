"""Shard-backed training samples, the train/val split and the rank-aware stream (msaformer.data.dataset)."""

from __future__ import annotations

import numpy as np
import pytest

from msaformer.data.alphabet import encode_msa
from msaformer.data.collate import IGNORE_INDEX
from msaformer.data.dataset import (
    MsaShardDataset,
    StreamBatchSampler,
    eval_keys,
    make_loader,
    position_state,
)
from msaformer.data.sampling import STRATEGIES, SamplingOptions
from msaformer.data.shards import ShardReader
from msaformer.errors import ConfigError, ShardError
from tests.train_fixtures import msa_shards  # noqa: F401


def unmasked(sample):
    return np.where(sample.targets != IGNORE_INDEX, sample.targets, sample.tokens)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_samples_keep_query_first_and_fit_budget(msa_shards, strategy):
    options = SamplingOptions(strategy=strategy, max_len=37, max_tokens=38 * 11, min_coverage=0.3)
    data = MsaShardDataset([msa_shards], val_fraction=0.0, options=options, seed=3)
    reader = ShardReader(msa_shards)
    assert len(data) == len(reader)
    for i in range(len(data)):
        sample = data[(2, i)]
        ids = unmasked(sample)
        rows, cols = ids.shape
        assert rows * cols <= options.max_tokens and cols - 1 == min(37, reader.index["n_res"][i])
        query = encode_msa(reader.read(int(data.records.record[i])).tokens[:1])[0, 1:]
        # the first row is a window of the query (cls column first)
        starts = [s for s in range(len(query) - cols + 2) if (query[s : s + cols - 1] == ids[0, 1:]).all()]
        assert starts, f"row 0 of sample {i} is not a window of the query"
        assert (ids[:, 0] == 0).all()
        assert (sample.targets != IGNORE_INDEX).any()


def test_sample_depends_only_on_seed_epoch_and_record(msa_shards):
    data = MsaShardDataset([msa_shards], val_fraction=0.0, options=SamplingOptions(max_len=29, max_tokens=30 * 7))
    again = MsaShardDataset([msa_shards], val_fraction=0.0, options=SamplingOptions(max_len=29, max_tokens=30 * 7))
    a, b = data[(4, 5)], again[(4, 5)]
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.targets, b.targets)
    other_epoch = data[(5, 5)]
    assert other_epoch.tokens.shape != a.tokens.shape or not np.array_equal(other_epoch.targets, a.targets)


def test_split_by_hash_is_disjoint_stable_and_complete(msa_shards):
    train = MsaShardDataset([msa_shards], split="train", val_fraction=0.3)
    val = MsaShardDataset([msa_shards], split="val", val_fraction=0.3)
    index = train.readers[0].index
    train_hashes = set(index["hash"].iloc[train.records.record])
    val_hashes = set(index["hash"].iloc[val.records.record])
    assert not train_hashes & val_hashes
    assert len(train) + len(val) == len(index) and len(val) > 0 and len(train) > 0
    np.testing.assert_array_equal(MsaShardDataset([msa_shards], split="val", val_fraction=0.3).records.record,
                                  val.records.record)


@pytest.mark.parametrize("world,batch,n", [(3, 2, 17), (2, 1, 5), (1, 4, 7)])
def test_ranks_see_disjoint_records_covering_each_epoch(world, batch, n):
    samplers = [StreamBatchSampler(n, micro_batch_size=batch, rank=r, world_size=world, seed=11) for r in range(world)]
    seen = {}
    for k in range(3 * n):  # several epochs, micro-batches straddling epoch ends
        for r, sampler in enumerate(samplers):
            for key in sampler.keys(k):
                assert key not in seen, f"{key} given to rank {seen.get(key)} and rank {r}"
                seen[key] = r
    total = 3 * n * world * batch
    epochs_complete = total // n
    for epoch in range(epochs_complete):
        assert sorted(i for (e, i) in seen if e == epoch) == list(range(n))
    # the same seed gives the same stream in a new sampler; another epoch (or seed) another order
    again = StreamBatchSampler(n, micro_batch_size=batch, rank=0, world_size=world, seed=11)
    assert [again.keys(k) for k in range(3)] == [samplers[0].keys(k) for k in range(3)]
    assert not np.array_equal(samplers[0]._perm(0), samplers[0]._perm(1))
    other_seed = StreamBatchSampler(n, micro_batch_size=batch, rank=0, world_size=world, seed=12)
    assert not np.array_equal(other_seed._perm(0), samplers[0]._perm(0))


def test_stream_resumes_at_saved_position():
    full = StreamBatchSampler(13, micro_batch_size=3, rank=1, world_size=2, seed=5)
    first = [full.keys(k) for k in range(9)]
    saved = position_state(full.position_after(4), 13)
    assert saved == {"consumed": 24, "epoch": 1, "index": 11, "n_records": 13}
    resumed = StreamBatchSampler(13, micro_batch_size=3, rank=1, world_size=2, seed=5, start=saved["consumed"])
    assert [resumed.keys(k) for k in range(5)] == first[4:]
    assert list(StreamBatchSampler(13, micro_batch_size=3, seed=5, max_batches=2)) == [
        StreamBatchSampler(13, micro_batch_size=3, seed=5).keys(k) for k in range(2)]


def test_eval_keys_are_disjoint_and_equal_in_count():
    per_rank = [eval_keys(11, rank=r, world_size=3, micro_batch_size=2) for r in range(3)]
    flat = [key for batches in per_rank for b in batches for key in b]
    assert len(flat) == len(set(flat)) == 9
    assert len({len(b) for b in per_rank}) == 1


def test_loader_workers_give_the_same_batches(msa_shards):
    import torch

    data = MsaShardDataset([msa_shards], val_fraction=0.0, options=SamplingOptions(max_len=19, max_tokens=20 * 5))
    sampler = lambda: StreamBatchSampler(len(data), micro_batch_size=3, rank=0, world_size=2, max_batches=4)  # noqa: E731
    serial = list(make_loader(data, sampler(), num_workers=0))
    workers = list(make_loader(data, sampler(), num_workers=2, prefetch_factor=2))
    assert len(serial) == len(workers) == 4
    for a, b in zip(serial, workers):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)


def test_errors_are_one_line(tmp_path, msa_shards):
    with pytest.raises(ShardError):
        MsaShardDataset([tmp_path / "missing"])
    with pytest.raises(ConfigError, match="data.shards is empty"):
        MsaShardDataset([])
    with pytest.raises(ConfigError, match="training split is empty"):
        StreamBatchSampler(0, micro_batch_size=1)
    with pytest.raises(ConfigError, match="val_fraction"):
        MsaShardDataset([msa_shards], val_fraction=1.0)
