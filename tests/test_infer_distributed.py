"""Multi-process inference (msaformer.infer.distributed): 2 gloo ranks under torchrun write exactly the
one-process output; a killed 2-process run resumes (under SLURM-style srun variables) computing only what is
missing; the search shares its queries out the same way."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from msaformer.data.inputs import iter_inputs, iter_sources
from msaformer.infer.distributed import assign_batches, launcher_ranks, parts_dir, source_records
from msaformer.infer.msa import EmbedOptions, embed
from msaformer.model import MSALanguageModel, MsaModelConfig, save_model
from tests.paths import REPO
from tests.train_fixtures import free_port

pytestmark = pytest.mark.slow
TORCHRUN = Path(sys.executable).with_name("torchrun")
INCLUDE = "per_tok,mean,contacts,logits,contacts_csv"

_spec = importlib.util.spec_from_file_location("make_databases", REPO / "tools" / "make_databases.py")
make_databases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_databases)


def _a3m(rng, depth: int, length: int) -> bytes:
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY-", dtype=np.uint8)
    rows = letters[rng.integers(0, 21, size=(depth, length))]
    rows[0] = letters[rng.integers(0, 20, size=length)]
    return b"".join(b">s%d\n%s\n" % (k, r.tobytes()) for k, r in enumerate(rows))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny model (60 positions) and inputs of odd shapes: a folder of A3M files (some longer than the model,
    one broken), an ffindex database and a shard directory."""
    root = tmp_path_factory.mktemp("dist")
    torch.manual_seed(11)
    save_model(MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=60)), root / "tiny.pt")
    rng = np.random.default_rng(7)
    folder = root / "msas"
    folder.mkdir()
    for i in range(26):
        length = int(rng.integers(70, 95)) if i % 6 == 0 else int(rng.integers(13, 50))
        (folder / f"m{i:02d}.a3m").write_bytes(_a3m(rng, int(rng.integers(3, 12)), length))
    (folder / "broken.a3m").write_text(">q\nACDE\n>r\nAC\n")
    make_databases.write_ffindex(root / "db" / "small", [(f"e{k}", _a3m(rng, 5 + k, 21 + 2 * k)) for k in range(6)])
    from msaformer.data.preprocess import preprocess

    (root / "raw").mkdir()
    for k in range(3):
        (root / "raw" / f"s{k}.a3m").write_bytes(_a3m(rng, 4 + k, 30 + 7 * k))
    preprocess([str(root / "raw")], root / "shards", workers=1)
    return root


def _inputs(work: Path) -> list[Path]:
    return [work / "msas", work / "db" / "small", work / "shards"]


def _args(work: Path, out: Path) -> list[str]:
    return ["embed", *map(str, _inputs(work)), "-c", str(work / "tiny.pt"), "-o", str(out),
            "--include", INCLUDE, "--on-error", "skip", "--window", "40", "--stride", "15",
            "--toks-per-batch", "1500", "-q"]  # fmt: skip


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_", "SLURM_", "TORCHELASTIC"))}  # fmt: skip
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _torchrun(args, env, nproc=2, **kw):
    cmd = [str(TORCHRUN), "--nproc_per_node", str(nproc), "--master_port", str(free_port()), "-m", "msaformer", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _one_process(work: Path, out: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank (OMP_NUM_THREADS=1): the same kernels, the same bits
    try:
        opts = EmbedOptions(include=tuple(INCLUDE.split(",")), on_error="skip", window=40, stride=15,
                            toks_per_batch=1500)  # fmt: skip
        summary = embed(_inputs(work), work / "tiny.pt", out, opts)
    finally:
        torch.set_num_threads(threads)
    assert summary.ok == 35 and summary.failed == 1


def _contents(path: Path) -> dict:
    items = {}
    with h5py.File(path) as h5:
        items["/"] = {k: str(v) for k, v in h5.attrs.items()}
        h5.visititems(lambda name, obj: items.__setitem__(
            name, (dict(obj.attrs), obj[()] if isinstance(obj, h5py.Dataset) else None)))
    return items


def _assert_same_output(a: Path, b: Path) -> None:
    x, y = _contents(a), _contents(b)
    assert x["/"] == y["/"]
    assert x.keys() == y.keys()
    for key in x:
        if key == "/":
            continue
        assert {k: str(v) for k, v in x[key][0].items()} == {k: str(v) for k, v in y[key][0].items()}, key
        if x[key][1] is not None:
            assert x[key][1].dtype == y[key][1].dtype and np.array_equal(x[key][1], y[key][1]), key
    assert a.with_suffix(".csv").read_bytes() == b.with_suffix(".csv").read_bytes()
    side_a, side_b = a.with_name(a.stem + "_contacts"), b.with_name(b.stem + "_contacts")
    names = sorted(p.name for p in side_a.iterdir())
    assert names == sorted(p.name for p in side_b.iterdir()) and len(names) == 35
    assert all((side_a / n).read_bytes() == (side_b / n).read_bytes() for n in names)


def test_two_processes_write_exactly_the_one_process_output(work, tmp_path):
    one, two = tmp_path / "one" / "e.h5", tmp_path / "two" / "e.h5"
    one.parent.mkdir(), two.parent.mkdir()
    _one_process(work, one)
    proc = _torchrun(_args(work, two), _env())
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output[-3000:]
    _assert_same_output(one, two)
    with open(two.with_suffix(".csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows][:3] == ["broken", "m00", "m01"] and rows[0]["status"] != "ok"
    assert int(rows[1]["length"]) > 59  # longer than the model: scored in windows, full length restored
    assert not parts_dir(two).exists()


def test_killed_run_resumes_computing_only_the_missing_batches(work, tmp_path):
    import psutil

    out = tmp_path / "e.h5"
    proc = _torchrun(_args(work, out), _env(MSAFORMER_PART_SECONDS="0"))  # a part file after every batch
    started = time.monotonic()
    while time.monotonic() - started < 120 and proc.poll() is None:
        if len(list(parts_dir(out).glob("part-*.h5"))) >= 2:
            break
        time.sleep(0.01)
    victims = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in victims:  # every process at once, as a node failure would
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=30)
    assert not out.exists(), "the run finished before it could be killed"
    kept = len(list(parts_dir(out).glob("part-*.h5")))
    assert kept >= 2
    # resume under SLURM's variables (srun, no MASTER_ADDR: the ranks meet through a file store)
    env = _env(SLURM_JOB_ID="77", SLURM_STEP_ID="0", SLURM_STEP_NUM_TASKS="2", SLURM_STEP_TASKS_PER_NODE="2")
    ranks = [subprocess.Popen([sys.executable, "-m", "msaformer", *_args(work, out)], cwd=REPO, text=True,
                              env={**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=180)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    resumed = re.search(r"resumed: (\d+) of (\d+) batches", outputs[0])
    assert resumed is not None, outputs[0][-2000:]
    assert 2 <= int(resumed.group(1)) < int(resumed.group(2))
    one = tmp_path / "one" / "e.h5"
    one.parent.mkdir()
    _one_process(work, one)
    _assert_same_output(one, out)
    assert not parts_dir(out).exists()


def test_source_records_match_iter_inputs(work):
    inputs = _inputs(work)
    expected = [(i.name, i.source, i.error) for i in iter_inputs(inputs)]
    got = [(name, where, error) for source in iter_sources(inputs) for name, where, _, error in source_records(source)]
    assert got == expected


def test_batches_are_dealt_out_by_token_cost():
    costs = [100, 90, 50, 40, 30, 20, 10, 10]
    shares = assign_batches(costs, 2)
    loads = [sum(costs[b] for b in share) for share in shares]
    assert sorted(b for s in shares for b in s) == list(range(len(costs)))
    assert abs(loads[0] - loads[1]) <= 10
    assert assign_batches([5], 3) == [[0], [], []]


def test_launcher_variables(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "SLURM_", "OMPI_")):
            monkeypatch.delenv(key)
    assert launcher_ranks().world_size == 1
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert launcher_ranks().world_size == 1  # an sbatch script, not an srun step: one process
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "4")
    assert launcher_ranks() == distributed_ranks(3, 8, 1, 4)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "6")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert launcher_ranks() == distributed_ranks(5, 6, 2, 3)  # torchrun / deepspeed first


def distributed_ranks(*values):
    from msaformer.infer.distributed import Ranks

    return Ranks(*values)


def test_search_under_torchrun_shares_the_queries(tmp_path):
    from msaformer.infer.search import read_fasta
    from msaformer.search_sample import write_planted

    planted = write_planted(tmp_path / "p", families=3, members=4, decoys=60, seed=5)
    proc = _torchrun(["search", str(planted.queries), "--db", str(planted.targets), "-o", str(tmp_path / "o"),
                      "--cpus", "1", "-q"], _env())  # fmt: skip
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output[-3000:]
    with open(tmp_path / "o" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["query"] for r in rows] == [ident for ident, _, _ in read_fasta(planted.queries)]
    assert [int(r["depth"]) for r in rows] == [5, 5, 5, 1]


def test_deepspeed_launcher_writes_the_one_process_output(work, tmp_path):
    deepspeed = Path(sys.executable).with_name("deepspeed")
    if not deepspeed.is_file():
        pytest.skip("the deepspeed launcher is not installed")
    one, two = tmp_path / "one.h5", tmp_path / "ds.h5"
    args = ["embed", str(work / "db" / "small"), "-c", str(work / "tiny.pt"), "--include", "mean,contacts",
            "--toks-per-batch", "400", "-q"]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embed([work / "db" / "small"], work / "tiny.pt", one,
              EmbedOptions(include=("mean", "contacts"), toks_per_batch=400))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    cmd = [str(deepspeed), "--no_local_rank", "--num_accelerators", "2", "--master_port", str(free_port()),
           "--module", "msaformer", *args, "-o", str(two)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(DS_ACCELERATOR="cpu"), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "dist_world_size=2" in proc.stdout + proc.stderr
    x, y = _contents(one), _contents(two)
    assert x.keys() == y.keys() and len(x) > 6
    for key in x:
        if key != "/" and x[key][1] is not None:
            assert np.array_equal(x[key][1], y[key][1]), key
    assert one.with_suffix(".csv").read_bytes() == two.with_suffix(".csv").read_bytes()
