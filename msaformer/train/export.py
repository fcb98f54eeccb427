"""Consolidating a run's DeepSpeed (ZeRO) checkpoint into a plain msaformer model file."""

from __future__ import annotations

import json
from pathlib import Path

from msaformer.errors import CheckpointError, ConfigError
from msaformer.train.checkpoints import CHECKPOINT_DIR, complete_checkpoints, latest_checkpoint
from msaformer.train.execution import plain_names
from msaformer.train.loop import MODEL_CONFIG_FILE


def consolidated_state_dict(run_dir: str | Path, tag: str | None = None) -> tuple[dict, str]:
    """Returns ``(fp32 state dict, tag)`` of checkpoint ``tag`` (default: the latest complete one).

    ZeRO stages 1-3 are merged with DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint`` (no process
    group needed); a stage-0 checkpoint holds whole weights in its model-states file. Every file is checked
    against the checkpoint's checksums and read with ``weights_only=True`` (nothing in it can run).
    """
    run_dir = Path(run_dir)
    root = run_dir / CHECKPOINT_DIR
    if tag is None:
        tag = latest_checkpoint(run_dir)
        if tag is None:
            raise CheckpointError(f"{run_dir}: no complete checkpoint under {root}; is this a training run directory?")
    elif tag not in complete_checkpoints(run_dir):
        known = ", ".join(complete_checkpoints(run_dir)) or "none"
        raise CheckpointError(f"{run_dir}: no complete checkpoint {tag!r} (complete: {known})")
    folder = root / tag
    # ZeRO-3 names it zero_pp_rank_0_mp_rank_00_model_states.pt, the other stages mp_rank_00_model_states.pt
    candidates = [folder / "mp_rank_00_model_states.pt", folder / "zero_pp_rank_0_mp_rank_00_model_states.pt"]
    model_states = next((c for c in candidates if c.is_file()), None)
    if model_states is None:
        raise CheckpointError(f"{folder}: no model states file; the checkpoint is damaged")
    from msaformer.train.checkpoints import checkpoint_problem
    from msaformer.train.safe_load import safe_load, safe_zero_to_fp32

    problem = checkpoint_problem(folder)
    if problem is not None:
        raise CheckpointError(f"checkpoint {tag} is damaged: {problem}")
    states = safe_load(model_states)
    stage = int(states.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0))
    if stage == 0:
        module = states["module"]
        return plain_names({k: (v.float() if v.is_floating_point() else v).detach() for k, v in module.items()}), tag
    from msaformer.train.distributed import import_deepspeed, quiet_third_party

    import_deepspeed()
    with quiet_third_party():  # "Processing zero checkpoint ...", a tqdm bar: shown with --verbose only
        state = safe_zero_to_fp32(root, tag)
    # ZeRO-3 records parameters under their named_parameters() names, checkpoint-wrapper prefix included
    return plain_names({k: v.detach() for k, v in state.items()}), tag


def load_run_model_config(run_dir: str | Path):
    """Returns the MsaModelConfig a run trained (from ``run_dir/model_config.json``)."""
    from msaformer.config import from_dict
    from msaformer.model import MsaModelConfig
    from msaformer.model.msa_lm import REMOVED_FIELDS

    path = Path(run_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; is {run_dir} a directory written by msaformer train?")
    try:
        fields = {k: v for k, v in json.loads(path.read_text()).items() if k not in REMOVED_FIELDS}
        return from_dict(MsaModelConfig, fields, "model")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: unreadable model config ({exc})") from None


def export_weights(run_dir: str | Path, out: str | Path, *, tag: str | None = None) -> Path:
    """Writes the weights of a training run as a plain msaformer model file (``load_model`` reads it).

    Returns the output path.
    """
    from msaformer.model import MSALanguageModel, save_model
    from msaformer.model.files import load_weights

    if Path(out).is_dir():  # before the (slow) consolidation, not after
        raise CheckpointError(f"--out {out} is a directory; give the model file's name, e.g. {Path(out) / 'model.pt'}")
    config = load_run_model_config(run_dir)
    state_dict, tag = consolidated_state_dict(run_dir, tag)
    model = MSALanguageModel(config)
    # tied weights (the LM head shares the token embedding) may be stored once only
    load_weights(model, state_dict, f"{run_dir} ({tag})", ignore_missing=frozenset(_tied_keys(model)))
    return save_model(model.eval(), out)


def _tied_keys(model) -> set[str]:
    seen: dict[int, str] = {}
    tied = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = id(tensor)
        if key in seen:
            tied.add(name)
        else:
            seen[key] = name
    return tied
