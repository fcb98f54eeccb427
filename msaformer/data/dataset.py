"""Training samples from shard directories, and a resumable, rank-aware order over them.

:class:`MsaShardDataset` is map-style: an item is keyed by ``(epoch, record)`` and everything random about
it (column window, rows, masking) comes from a generator seeded with ``(seed, split, epoch, record)``. So a
sample is the same whichever rank or DataLoader worker builds it, and a resumed run sees exactly the
samples an uninterrupted run would have. Shards are opened lazily by each worker process (the readers hold
only paths and the index), so no HDF5 handle crosses a fork.

:class:`StreamBatchSampler` walks one endless stream of epochs (a fresh permutation per epoch) and deals
consecutive stream positions to ranks: within an epoch every record goes to exactly one rank, once. Its
position is a single integer (samples consumed by all ranks), saved in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from msaformer.data.alphabet import encode_msa
from msaformer.data.collate import MsaSample, mask_tokens
from msaformer.data.sampling import SamplingOptions, sample_msa
from msaformer.errors import ConfigError, ShardError

_SPLIT_CODES = {"train": 0, "val": 1}


def hash_fractions(hash_key: np.ndarray) -> np.ndarray:
    """Returns numbers in [0, 1) from 64-bit content-hash keys (:attr:`ShardReader.hash_key`): a stable, uniform
    key for the train / validation split."""
    return (np.asarray(hash_key, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class SplitIndex:
    """The records of one split: which shard directory (``reader``) and which record in it (``record``)."""

    reader: np.ndarray  # int64 [n]
    record: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.record)


def split_records(readers: Sequence, split: str, val_fraction: float) -> SplitIndex:
    """Returns the records of ``split`` ("train" or "val") over all readers, in directory and index order.

    A record is in "val" when the fraction of its content hash is below ``val_fraction``; identical
    alignments (same hash) always land in the same split, in every run.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    readers_out, records_out = [], []
    for r, reader in enumerate(readers):
        frac = hash_fractions(reader.hash_key)
        usable = reader.n_res > 0
        in_val = frac < val_fraction
        keep = usable & (in_val if split == "val" else ~in_val)
        rows = np.flatnonzero(keep)
        readers_out.append(np.full(len(rows), r, dtype=np.int64))
        records_out.append(rows.astype(np.int64))
    if not readers_out:
        return SplitIndex(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return SplitIndex(np.concatenate(readers_out), np.concatenate(records_out))


def open_readers(shard_dirs: Sequence[str | Path]) -> list:
    """Returns a ShardReader per directory; a missing or invalid one is a one-line ShardError."""
    from msaformer.data.shards import ShardReader

    if not shard_dirs:
        raise ConfigError("data.shards is empty: give one or more directories written by msaformer preprocess")
    return [ShardReader(d) for d in shard_dirs]


class MsaShardDataset:
    """Map-style dataset of masked, cropped, row-subsampled MSAs from shard directories.

    ``dataset[(epoch, i)]`` (or ``dataset[i]`` for epoch 0) returns a :class:`~msaformer.data.collate.MsaSample`:
    int64 ``[rows, cols + 1]`` inputs (masked) and targets (:data:`~msaformer.data.collate.IGNORE_INDEX`
    where unmasked), and ``record`` = ``i``, the position of the record in this split.
    """

    def __init__(
        self,
        shard_dirs: Sequence[str | Path],
        *,
        split: str = "train",
        val_fraction: float = 0.05,
        options: SamplingOptions | None = None,
        mask_prob: float = 0.15,
        seed: int = 0,
        max_depth: int | None = None,
        readers: Sequence | None = None,
    ) -> None:
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"data.mask_prob must be in (0, 1), got {mask_prob}")
        self.readers = list(readers) if readers is not None else open_readers(shard_dirs)
        self.split = split
        self.options = options or SamplingOptions()
        self.mask_prob = mask_prob
        self.seed = int(seed)
        self.max_depth = max_depth
        self.records = split_records(self.readers, split, val_fraction)

    def __len__(self) -> int:
        return len(self.records)

    def describe(self, i: int) -> str:
        """Returns ``directory:name`` of the i-th record, for messages."""
        reader = self.readers[int(self.records.reader[i])]
        return f"{reader.directory}:{reader.name(int(self.records.record[i]))}"

    def rng(self, epoch: int, i: int) -> np.random.Generator:
        """Returns the generator behind sample ``i`` of ``epoch``: a function of (seed, split, epoch, i) only."""
        return np.random.default_rng([self.seed, _SPLIT_CODES[self.split], int(epoch), int(i)])

    def __getitem__(self, key) -> MsaSample:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for a {self.split} split of {n} records")
        reader = self.readers[int(self.records.reader[i])]
        try:
            msa = reader.read(int(self.records.record[i]), self.max_depth, names=False)
        except (OSError, KeyError, ValueError) as exc:
            raise ShardError(f"cannot read {self.describe(i)} ({exc}); re-run msaformer preprocess") from None
        rng = self.rng(epoch, i)
        rows, columns = sample_msa(msa.tokens, self.options, rng)
        ids = encode_msa(msa.tokens[rows][:, columns])
        inputs, targets = mask_tokens(ids, rng, mask_prob=self.mask_prob)
        return MsaSample(inputs, targets, int(i))


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Returns the order of ``n`` records in ``epoch``: a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([int(seed), 0x5EED, int(epoch)]).permutation(n).astype(np.int64)


class StreamBatchSampler:
    """Yields micro-batches of ``(epoch, record)`` keys for one rank, from stream position ``start``.

    The stream is epoch 0's permutation, then epoch 1's, and so on. Micro-batch ``k`` of the job covers
    stream positions ``[k * W * B, (k + 1) * W * B)`` (W ranks, B = micro batch size); rank ``r`` takes
    positions ``k * W * B + j * W + r``. So within an epoch each record goes to exactly one rank, once
    (a micro-batch may straddle two epochs: nothing is dropped or repeated). ``start`` counts samples
    consumed by all ranks; ``position_after(k)`` is the value to save after k micro-batches.
    """

    def __init__(
        self,
        n_records: int,
        *,
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
        shuffle: bool = True,
        max_batches: int | None = None,
    ) -> None:
        if n_records < 1:
            raise ConfigError("the training split is empty: no records in data.shards (or all went to validation)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n = n_records
        self.batch = micro_batch_size
        self.rank = rank
        self.world = world_size
        self.seed = seed
        self.start = int(start)
        self.shuffle = shuffle
        self.max_batches = max_batches
        self._perm_cache: tuple[int, np.ndarray] | None = None

    @property
    def stride(self) -> int:
        """Stream positions consumed by one job-wide micro-batch."""
        return self.world * self.batch

    def position_after(self, n_micro_batches: int) -> int:
        return self.start + n_micro_batches * self.stride

    def _perm(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, epoch_permutation(self.n, self.seed, epoch, self.shuffle))
        return self._perm_cache[1]

    def keys(self, k: int) -> list[tuple[int, int]]:
        """Returns this rank's keys of job-wide micro-batch ``k`` (counted from ``start``)."""
        base = self.start + k * self.stride
        out = []
        for j in range(self.batch):
            position = base + j * self.world + self.rank
            epoch, offset = divmod(position, self.n)
            out.append((epoch, int(self._perm(epoch)[offset])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = 0
        while self.max_batches is None or k < self.max_batches:
            yield self.keys(k)
            k += 1

    def __len__(self) -> int:
        if self.max_batches is None:
            raise TypeError("an endless StreamBatchSampler has no length")
        return self.max_batches


def position_state(position: int, n_records: int) -> dict:
    """Returns the sampler position as saved in checkpoints: samples consumed, and (epoch, index in epoch)."""
    epoch, index = divmod(int(position), int(n_records))
    return {"consumed": int(position), "epoch": epoch, "index": index, "n_records": int(n_records)}


def eval_keys(n_records: int, *, rank: int, world_size: int, micro_batch_size: int,
              max_batches: int | None = None) -> list[list[tuple[int, int]]]:
    """Returns this rank's validation micro-batches: records ``rank::world_size`` in order, epoch 0.

    Every rank gets the same number of batches (some possibly shorter or empty at the end is avoided by
    truncating to the smallest rank's count), so collective reductions line up.
    """
    per_rank = n_records // world_size
    if per_rank == 0:
        return []
    mine = list(range(rank, per_rank * world_size, world_size))
    batches = [[(0, i) for i in mine[s : s + micro_batch_size]] for s in range(0, len(mine), micro_batch_size)]
    if max_batches is not None:
        batches = batches[:max_batches]
    return batches


def make_loader(dataset: MsaShardDataset, batch_sampler, *, num_workers: int = 2, prefetch_factor: int = 4):
    """Returns a torch DataLoader over ``dataset`` driven by ``batch_sampler`` (keys), collating to tensors."""
    import torch

    from msaformer.data.collate import collate_msas

    kwargs = {}
    if num_workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor, "persistent_workers": False}
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_msas,
        num_workers=num_workers,
        **kwargs,
    )
