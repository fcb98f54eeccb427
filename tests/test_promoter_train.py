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
