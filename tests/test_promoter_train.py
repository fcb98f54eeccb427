"""Promoter training: config loading, metrics, reproducibility of a micro run through the DeepSpeed engine."""

import csv
from pathlib import Path

import numpy as np
import pytest

from msaformer.errors import ConfigError
from msaformer.train.promoter import binary_metrics, load_train_config, train_promoter
from tests.paths import PROMOTER, needs_shared

ROOT = Path(__file__).resolve().parents[1]
TATA = PROMOTER / "gue_prom_core_tata"


def test_shipped_configs_load():
    demo = load_train_config(ROOT / "configs" / "promoter" / "demo.yaml")
    assert demo.data.train.endswith("runs/demo/promoter/train.csv")  # written by `msaformer demo runs/demo`
    for name in ("tiny", "gue_prom_core", "gue_prom_core_small", "gue_prom_core_mean", "gue_prom_core_tata",
                 "gue_prom_core_notata"):
        cfg = load_train_config(ROOT / "configs" / "promoter" / f"{name}.yaml")
        assert Path(cfg.data.train).is_file() or not PROMOTER.is_dir()
        assert cfg.model.max_length == 70


def test_config_errors_name_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {train: a.csv, dev: b.csv}\noptim: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) epoch in optim"):
        load_train_config(cfg)
    with pytest.raises(ConfigError, match="positional"):
        load_train_config(None, ["data.train=a", "data.dev=b", "model.positional=relative"])
    with pytest.raises(ConfigError, match="train and dev"):
        load_train_config(None, ["data.train=a"])


def test_binary_metrics_against_hand_counts():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    probs = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4])
    m = binary_metrics(labels, probs)
    tp, fn, fp, tn = 2, 1, 1, 3
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m["mcc"] == pytest.approx(mcc)
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["accuracy"] == pytest.approx(5 / 7)
    # AUROC: share of (positive, negative) pairs ranked correctly.
    pairs = [(p, n) for p in probs[labels == 1] for n in probs[labels == 0]]
    assert m["auroc"] == pytest.approx(np.mean([p > n for p, n in pairs]))


def _micro(tmp_path, name, seed=3):
    overrides = [
        f"data.train={TATA / 'train.csv'}", f"data.dev={TATA / 'dev.csv'}", f"data.test={TATA / 'test.csv'}",
        "data.max_train_records=301", "model.embed_dim=12", "model.num_heads=2", "model.ffn_dim=10",
        "model.num_layers=1", "model.conv_stem=5", "optim.epochs=2", "optim.batch_size=37", "optim.eval_every=5",
        "optim.warmup_steps=2", f"seed={seed}", "threads=1", f"out_dir={tmp_path / name}",
    ]
    return train_promoter(load_train_config(None, overrides))


@needs_shared
def test_micro_run_is_reproducible_and_writes_its_reports(tmp_path):
    a = _micro(tmp_path, "a")
    b = _micro(tmp_path, "b")
    assert a["steps"] == 2 * 9 and a["best_step"] in (5, 10, 15, 18)
    for split in ("dev", "test"):
        assert a[split] == b[split]
    preds_a = (tmp_path / "a" / "test_predictions.csv").read_text()
    assert preds_a == (tmp_path / "b" / "test_predictions.csv").read_text()
    rows = list(csv.DictReader(open(tmp_path / "a" / "results.csv")))
    assert [r["split"] for r in rows] == ["dev", "test"] and float(rows[0]["mcc"]) == pytest.approx(a["dev"]["mcc"])
    dev_evals = [r for r in csv.DictReader(open(tmp_path / "a" / "metrics.csv")) if r["split"] == "dev"]
    assert len(dev_evals) == 4  # steps 5, 10, 15 and the final step 18
    # The kept weights are those of the best dev MCC.
    assert max(float(r["dev_mcc"]) for r in dev_evals) == pytest.approx(a["dev"]["mcc"], abs=1e-9)
    _micro(tmp_path, "c", seed=4)
    assert (tmp_path / "c" / "test_predictions.csv").read_text() != preds_a


@needs_shared
def test_threads_setting_holds_during_training(tmp_path, monkeypatch):
    """`threads: 1` must survive the engine's own per-rank default (two runs side by side on a 2-core CPU ran
    5-10x slower when each silently used both cores)."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _micro(tmp_path, "a")  # threads=1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@needs_shared
def test_ensemble_run_trains_members_resumes_and_saves_one_model(tmp_path):
    from msaformer.infer.promoter import evaluate_file
    from msaformer.model.promoter import PromoterEnsemble, load_promoter_model

    overrides = [
        f"data.train={TATA / 'train.csv'}", f"data.dev={TATA / 'dev.csv'}", f"data.test={TATA / 'test.csv'}",
        "data.max_train_records=301", "model.embed_dim=12", "model.num_heads=2", "model.ffn_dim=10",
        "model.num_layers=1", "model.conv_stem=5", "model.conv_layers=1", "optim.epochs=1", "optim.batch_size=37",
        "optim.warmup_steps=2", "optim.tune_threshold=true", "seed=1", "ensemble=2", "threads=1",
        f"out_dir={tmp_path / 'ens'}",
    ]
    res = train_promoter(load_train_config(None, overrides))
    run = tmp_path / "ens"
    member_seeds = []
    for i in range(2):
        meta = load_promoter_model(run / f"member-{i}" / "model.pt")[1]
        member_seeds.append(meta["seed"])
    assert member_seeds == [2, 3]  # seed 1 of an ensemble of 2: members 2 and 3 (disjoint from seed 0's)
    model, meta = load_promoter_model(run / "model.pt")
    assert isinstance(model, PromoterEnsemble) and len(model.members) == 2
    assert meta["threshold"] == res["threshold"] and meta["member_seeds"] == [2, 3]
    # The ensemble file scores exactly as its two member files passed together at the ensemble's threshold.
    one = evaluate_file(TATA / "test.csv", [run / "model.pt"], tmp_path / "e1")
    two = evaluate_file(TATA / "test.csv", [run / f"member-{i}" / "model.pt" for i in range(2)], tmp_path / "e2",
                        threshold=res["threshold"])
    assert one["mcc"] == pytest.approx(res["test"]["mcc"]) == pytest.approx(two["mcc"])
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert rows[-1]["split"] == "test" and rows[-1]["weights"] == "ensemble of 2"
    # Run again: finished members are kept, not retrained; the ensemble is the same.
    stamp = (run / "member-0" / "model.pt").stat().st_mtime_ns
    again = train_promoter(load_train_config(None, overrides))
    assert (run / "member-0" / "model.pt").stat().st_mtime_ns == stamp
    assert again["test"] == res["test"]
