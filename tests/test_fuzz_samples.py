"""Seeded fuzzing of the real sample files: thousands of byte-level mutations (cuts, flips, insertions,
deletions, duplicated and swapped spans, NUL runs, gzip of the result), each read as a user's file would be.
Only the package's own one-line errors may come out, and every success is a well-formed alignment."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest

from msaformer.data.parsers import is_alignment_path, parse_file_bytes
from msaformer.errors import MsaformerError
from tests.paths import MSA, needs_shared

pytestmark = needs_shared
#: Mutations per run; the seed makes every run the same, so a failure reproduces.
MUTATIONS = 3000
#: Bytes of each sample kept as the seed of its mutants (mutating 1.7 MB per case would take minutes).
WINDOW = 6000


def _samples() -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(MSA.rglob("*")):
        if path.is_file() and is_alignment_path(path.name):
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            out.append((path.name.removesuffix(".gz"), raw[:WINDOW]))
    return out


def _mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    for _ in range(int(rng.integers(1, 6))):
        n = len(data)
        at = int(rng.integers(0, n + 1))
        span = int(rng.integers(1, 64))
        action = rng.integers(0, 8)
        if action == 0:
            del data[at:]
        elif action == 1 and n:
            data[min(at, n - 1)] = int(rng.integers(0, 256))
        elif action == 2:
            data[at:at] = rng.integers(0, 256, size=span, dtype=np.uint8).tobytes()
        elif action == 3:
            del data[at : at + span]
        elif action == 4:
            data[at:at] = data[at : at + span]  # a duplicated span
        elif action == 5:
            data[at:at] = b"\x00" * span
        elif action == 6:
            data[at:at] = bytes(rng.choice(list(b">\n#/-.\r\t"), size=span))
        elif n > 2 * span:
            a, b = sorted(int(x) for x in rng.integers(0, n - span, size=2))
            if b - a >= span:
                data[a : a + span], data[b : b + span] = data[b : b + span], data[a : a + span]
    return bytes(data)


def test_mutated_sample_files_raise_only_package_errors():
    samples = _samples()
    assert len(samples) >= 15, "the sample corpus is smaller than expected"
    rng = np.random.default_rng(20261202)
    outcomes = {"parsed": 0, "refused": 0}
    for case in range(MUTATIONS):
        name, raw = samples[case % len(samples)]
        data = _mutate(raw, rng)
        where = name
        if case % 7 == 0:  # the same damage inside a gzip stream, sometimes cut short too
            data = gzip.compress(data, compresslevel=1)
            where = name + ".gz"
            if case % 14 == 0:
                data = data[: int(rng.integers(0, len(data) + 1))]
        try:
            msas = parse_file_bytes(data, where)
        except MsaformerError as exc:
            message = str(exc)
            assert message and "\n" not in message and where in message, (case, message)
            outcomes["refused"] += 1
            continue
        except (zlib.error, EOFError, OSError, ValueError, IndexError, KeyError, UnicodeError) as exc:
            pytest.fail(f"case {case} ({where}): {type(exc).__name__} escaped: {exc}")
        for msa in msas:
            assert msa.depth >= 1 and msa.length >= 1, case
            assert msa.tokens.shape == msa.deletions.shape == (msa.depth, msa.length), case
            assert len(msa.names) == msa.depth, case
        outcomes["parsed"] += 1
    assert outcomes["parsed"] > MUTATIONS // 50 and outcomes["refused"] > MUTATIONS // 2, outcomes  # both paths ran
