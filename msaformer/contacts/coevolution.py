"""Coevolution baselines: an ``[L, L]`` contact score map from an alignment alone, no model (torch; a GPU when
one is given).

* :func:`potts_contacts`: a GREMLIN-style Potts model (Balakrishnan et al. 2011; Kamisetty et al. 2013;
  GREMLIN_TF): 21 states (20 amino acids + gap; any other letter counts as a gap), fields ``h [L, 21]`` and
  couplings ``J [L, 21, L, 21]`` fitted by maximising the weighted pseudo-likelihood with L-BFGS, L2
  regularisation ``0.01 * |h|^2 + 0.01 * (L - 1) * 20 * |J|^2 / 2`` (GREMLIN's), each row weighted by one over
  the number of rows at >= 80 % identity to it (itself included). The score of a pair is the Frobenius norm
  of ``J_ij`` over the 20 amino-acid states (the gap state left out), then the average product correction.
* :func:`mi_contacts`: mutual information of column pairs over the same 21 states (gaps included), with the
  same row weights and a small pseudocount, then APC.

Scores are not probabilities: higher means more likely in contact; the diagonal is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from msaformer.errors import MsaformerError

#: The 20 amino acids in state order; state 20 is the gap (and every other letter).
AMINO = "ACDEFGHIKLMNPQRSTVWY"
STATES = 21
GAP_STATE = 20


def _state_table() -> np.ndarray:
    table = np.full(256, GAP_STATE, dtype=np.int64)
    for k, a in enumerate(AMINO):
        table[ord(a)] = table[ord(a.lower())] = k
    return table


_STATE_OF = _state_table()


def msa_states(tokens: np.ndarray) -> np.ndarray:
    """Returns int64 ``[N, L]`` states (0..19 amino acids in :data:`AMINO` order, 20 gap/other) of ASCII
    ``[N, L]`` aligned tokens."""
    return _STATE_OF[np.asarray(tokens, dtype=np.uint8)]


def _one_hot(states: torch.Tensor) -> torch.Tensor:
    """Returns float32 ``[N, L * 21]`` of states ``[N, L]``."""
    n, length = states.shape
    return torch.nn.functional.one_hot(states, STATES).reshape(n, length * STATES).float()


def sequence_weights(states: torch.Tensor, identity: float = 0.8, chunk: int = 2048) -> torch.Tensor:
    """Returns float32 ``[N]`` weights: 1 / the number of rows whose identity to the row (identical states,
    gaps included, over all L columns) is at least ``identity``; the row itself counts."""
    n, length = states.shape
    onehot = _one_hot(states)
    counts = torch.empty(n, dtype=torch.float32, device=states.device)
    threshold = identity * length - 1e-3  # identical positions needed
    for start in range(0, n, chunk):
        same = onehot[start : start + chunk] @ onehot.T  # (chunk, N) identical positions
        counts[start : start + chunk] = (same >= threshold).sum(1).float()
    return 1.0 / counts


def apc(scores: torch.Tensor) -> torch.Tensor:
    """Returns ``scores [L, L]`` (symmetric, zero diagonal) minus its average product correction, diagonal 0.
    Means are over off-diagonal entries, as in GREMLIN."""
    length = scores.shape[0]
    off = ~torch.eye(length, dtype=torch.bool, device=scores.device)
    s = scores * off
    row = s.sum(1) / max(length - 1, 1)
    total = s.sum() / max(length * (length - 1), 1)
    corrected = s - row[:, None] * row[None, :] / total if total > 0 else s
    return (corrected + corrected.T) * 0.5 * off  # exactly symmetric (rounding of s differs by a few ulp)


def _device(device: str | torch.device) -> torch.device:
    from msaformer.infer.msa import resolve_device

    return device if isinstance(device, torch.device) else resolve_device(device)


def _available_bytes(dev: torch.device) -> int:
    """Returns the memory free for a fit: the GPU's free memory, or the host's MemAvailable (Linux)."""
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def _check_memory(need: int, what: str, depth: int, length: int, dev: torch.device) -> None:
    """Raises a one-line error when a fit would need more memory than is free (instead of swapping or being
    killed)."""
    free = _available_bytes(dev)
    if need > 0.8 * free:
        raise MsaformerError(
            f"{what} on {depth} rows x {length} columns needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB is "
            f"free on {dev.type}; crop the alignment or lower --max-seqs"
        )


def _checked(tokens: np.ndarray, what: str) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise MsaformerError(f"{what} needs an alignment of at least 2 columns, got shape {tokens.shape}")
    return msa_states(tokens)


def mi_contacts(tokens: np.ndarray, *, identity: float = 0.8, pseudocount: float = 0.01,
                device: str | torch.device = "auto", chunk: int = 4096) -> np.ndarray:
    """Returns the APC-corrected mutual information ``[L, L]`` float32 of an ``[N, L]`` ASCII alignment.

    ``pseudocount``: weight of a uniform distribution mixed into the (row-weighted) frequencies.
    """
    dev = _device(device)
    states = torch.from_numpy(_checked(tokens, "mi")).to(dev)
    n, length = states.shape
    width = length * STATES
    # the pair counts and three temporaries of their size, one-hot rows, a chunk of the identity matrix
    _check_memory(4 * (4 * width**2 + 2 * n * width + min(n, 2048) * n), "mi", n, length, dev)
    weights = sequence_weights(states, identity)
    neff = weights.sum()
    pair = torch.zeros(length * STATES, length * STATES, device=dev)
    for start in range(0, n, chunk):
        x = _one_hot(states[start : start + chunk])
        pair += (x * weights[start : start + chunk, None]).T @ x
    pair = pair / neff
    single = pair.diagonal().reshape(length, STATES)
    single = (1 - pseudocount) * single + pseudocount / STATES
    pair = (1 - pseudocount) * pair.reshape(length, STATES, length, STATES) + pseudocount / STATES**2
    ratio = pair / (single[:, :, None, None] * single[None, None, :, :])
    mi = (pair * torch.log(ratio)).sum((1, 3))
    mi.fill_diagonal_(0.0)
    return apc(mi).float().cpu().numpy()


@dataclass(frozen=True)
class PottsOptions:
    """How :func:`potts_contacts` fits (GREMLIN's defaults)."""

    iterations: int = 100  # L-BFGS iterations at most
    identity: float = 0.8  # sequence reweighting threshold
    lambda_h: float = 0.01  # L2 on fields
    lambda_j: float = 0.01  # L2 on couplings, times (L - 1) * 20
    history: int = 10  # L-BFGS memory
    gather: bool | None = None  # sum couplings by a gather (CPU default) or by onehot @ J (GPU default)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise MsaformerError(f"Potts iterations must be at least 1, got {self.iterations}")
        if not 0.0 < self.identity <= 1.0:
            raise MsaformerError(f"reweighting identity must be in (0, 1], got {self.identity}")


@dataclass
class PottsModel:
    """A fitted Potts model: fields ``h [L, 21]``, couplings ``J [L, 21, L, 21]`` (symmetric, zero
    self-couplings), the effective number of rows, and how the fit went."""

    h: torch.Tensor
    J: torch.Tensor
    neff: float
    loss: float
    evaluations: int

    def scores(self) -> np.ndarray:
        """Returns the APC-corrected Frobenius norms ``[L, L]`` float32 of the amino-acid couplings."""
        raw = self.J[:, :GAP_STATE, :, :GAP_STATE].pow(2).sum((1, 3)).sqrt()
        raw.fill_diagonal_(0.0)
        return apc(raw).float().cpu().numpy()


def fit_potts(tokens: np.ndarray, options: PottsOptions | None = None, *, device: str | torch.device = "auto",
              progress: Callable[[int, int], None] | None = None) -> PottsModel:
    """Returns the pseudo-likelihood Potts model of an ``[N, L]`` ASCII alignment (see the module docstring).

    ``progress(evaluations, max_evaluations)`` is called after every loss evaluation.
    """
    opts = options or PottsOptions()
    dev = _device(device)
    states = torch.from_numpy(_checked(tokens, "potts")).to(dev)
    n, length = states.shape
    width = length * STATES
    # couplings, their gradient, L-BFGS history (2 per step) and ~6 temporaries; one-hot rows and per-evaluation
    # [N, 21 L] sums, logits and their gradients; a chunk of the identity matrix
    _check_memory(4 * ((2 * opts.history + 8) * width**2 + 6 * n * width + min(n, 2048) * n), "potts", n, length, dev)
    weights = sequence_weights(states, opts.identity)
    neff = float(weights.sum())
    onehot = _one_hot(states)  # (N, L*21)
    # row (j, x_nj) of J for every (n, j): summing them is onehot @ J; a gather-sum is ~3x faster on a CPU,
    # a matrix product is the fast way on a GPU
    rows_of = states + torch.arange(length, device=dev) * STATES
    use_gather = dev.type == "cpu" if opts.gather is None else opts.gather
    targets = states.reshape(-1)
    # fields start at the weighted log frequencies (GREMLIN), couplings at zero
    freq = (onehot * weights[:, None]).sum(0).reshape(length, STATES) / neff
    h0 = torch.log(freq + 0.01 / STATES)
    h = (h0 - h0.mean(1, keepdim=True)).clone().requires_grad_(True)
    w = torch.zeros(length * STATES, length * STATES, device=dev, requires_grad=True)
    self_block = torch.block_diag(*[torch.ones(STATES, STATES, device=dev)] * length).bool()
    lambda_j = opts.lambda_j * (length - 1) * (STATES - 1)
    optimizer = torch.optim.LBFGS([h, w], lr=1.0, max_iter=opts.iterations, max_eval=opts.iterations * 5 // 4,
                                  history_size=opts.history, tolerance_grad=1e-5, tolerance_change=1e-9,
                                  line_search_fn="strong_wolfe")
    evaluations = 0

    def couplings() -> torch.Tensor:
        return (w + w.T).masked_fill(self_block, 0.0)  # symmetric, no self-coupling

    def closure() -> torch.Tensor:
        nonlocal evaluations
        optimizer.zero_grad()
        J = couplings()
        if use_gather:
            summed = torch.nn.functional.embedding_bag(rows_of, J, mode="sum")  # (N, L*21)
        else:
            summed = onehot @ J
        logits = summed.reshape(n, length, STATES) + h  # (N, L, 21): h_i + sum_j J_ij(., x_j)
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, STATES), targets, reduction="none")
        loss = (nll.reshape(n, length).sum(1) * weights).sum()
        loss = loss + opts.lambda_h * h.pow(2).sum() + 0.5 * lambda_j * J.pow(2).sum()
        loss.backward()
        evaluations += 1
        if progress is not None:
            progress(evaluations, opts.iterations * 5 // 4)
        return loss

    loss = optimizer.step(closure)
    with torch.no_grad():
        J = couplings().reshape(length, STATES, length, STATES)
    return PottsModel(h=h.detach(), J=J, neff=neff, loss=float(loss.detach()), evaluations=evaluations)


def potts_contacts(tokens: np.ndarray, options: PottsOptions | None = None, *, device: str | torch.device = "auto",
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Returns the GREMLIN-style Potts contact scores ``[L, L]`` float32 of an ``[N, L]`` ASCII alignment."""
    return fit_potts(tokens, options, device=device, progress=progress).scores()


__all__ = ["AMINO", "PottsModel", "PottsOptions", "apc", "fit_potts", "mi_contacts", "msa_states",
           "potts_contacts", "sequence_weights"]
