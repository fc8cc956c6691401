"""What a training run compares with what: the model's predictions per ``forces_mode``, the loss terms and
the Euclidean-distance loss (paper appendix A: ``mean_t ||pred_t - target_t||``, not squared).

Loss: ``sum_p w_p * L_p`` with ``L_p`` the mean over the present (masked) tensors of term ``p`` of the
Euclidean / Frobenius norm of the error (extensive totals, i.e. the energy: per atom), divided by the term's
scale when ``normalize_loss`` (default), so that weights compare dimensionless numbers.  A term is a head
(``forces``, ``born_effective_charges``, ...), ``forces`` as -dE/dr in conservative mode, ``stress`` or, in
joint mode, ``forces_conservative`` (-dE/dr against the force labels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Dict, List, Mapping, Sequence, Tuple

import torch

from ..properties import FORCES_CONSERVATIVE, PROPERTIES, loss_target

__all__ = ["euclidean_loss", "select_loss_terms", "LossTerms", "Predictor", "predictions"]


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, n_atoms=None
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked Euclidean-distance loss: mean over present tensors of ``||pred_t - target_t||``.

    ``pred``/``target``: ``[n, *cart]``; ``mask``: ``[n]`` bool.  With ``n_atoms`` ([n], energy) the error
    is taken per atom.  Returns ``(loss, sum_of_norms, count)``; gradients are finite also for zero errors.
    """
    diff = (pred - target).reshape(pred.shape[0], -1)  # [n, 3**rank]
    if n_atoms is not None:
        diff = diff / n_atoms.to(diff.dtype).unsqueeze(-1)
    sq = (diff * diff).sum(dim=-1)  # [n]
    ok = mask & (sq > 0)
    norm = torch.where(ok, torch.sqrt(torch.where(ok, sq, torch.ones_like(sq))), torch.zeros_like(sq))  # [n]
    total = norm.sum()
    count = mask.sum()
    return total / count.clamp(min=1).to(total.dtype), total, count


def select_loss_terms(heads: Sequence[str], present: AbstractSet[str], forces_mode: str,
                      loss_weights: Mapping[str, float]) -> Tuple[List[str], Dict[str, float]]:
    """Loss terms of a run and their weights (missing weights: 1; terms of weight 0 are dropped).

    ``heads``: the model's heads; ``present``: properties with labels in the training split (a head
    without labels, possible for a model from ``init_from``, keeps its weights untrained).
    """
    names = [h for h in heads if h in present]
    if forces_mode == "joint":
        if "energy" not in heads or "forces" not in heads:
            raise ValueError("forces_mode = 'joint' needs a model with both an energy and a forces head")
        if "forces" in present:
            names.append(FORCES_CONSERVATIVE)
    if forces_mode in ("conservative", "joint"):
        if "forces" in present and "forces" not in names:
            names.append("forces")
        if loss_weights.get("stress", 0) > 0:
            names.append("stress")
    weights = {n: loss_weights.get(n, 1.0) for n in names}
    return [n for n in names if weights[n] > 0], weights


@dataclass(frozen=True)
class LossTerms:
    """The loss of a run: ``names`` (terms, in order), ``weights`` and ``scales`` per term, ``normalize``."""

    names: Tuple[str, ...]
    weights: Mapping[str, float]
    scales: Mapping[str, float]
    normalize: bool

    @property
    def targets(self) -> Tuple[str, ...]:
        """Registry properties the terms are compared with (sorted)."""
        return tuple(sorted({loss_target(n) for n in self.names}))

    def term(self, pred: torch.Tensor, batch, name: str):
        """``euclidean_loss`` of term ``name``'s prediction ``pred`` on ``batch`` (per atom for extensive
        totals, i.e. the energy)."""
        tgt = loss_target(name)
        n_at = batch.n_atoms if PROPERTIES[tgt].extensive else None
        return euclidean_loss(pred, batch.targets[tgt], batch.masks[tgt], n_at)

    def total(self, out: Mapping[str, torch.Tensor], batch, dtype: torch.dtype) -> torch.Tensor:
        """The weighted (and scaled) sum of the terms on ``batch``: the scalar to minimise."""
        loss = torch.zeros((), dtype=dtype, device=batch.n_atoms.device)
        for name in self.names:
            lp, _, _ = self.term(out[name], batch, name)
            if self.normalize:
                lp = lp / self.scales[name]
            loss = loss + self.weights[name] * lp
        return loss


#: training ``forces_mode`` -> the model's ``forces`` argument (joint: direct ``forces`` plus -dE/dr)
MODEL_FORCES = {"direct": "direct", "conservative": "conservative", "joint": "both"}


def predictions(model, graph, forces_mode: str, stress: bool) -> Dict[str, torch.Tensor]:
    """The model's outputs for a ``forces_mode``, keyed by loss-term name: direct heads; conservative
    (``forces`` = -dE/dr); joint (``forces`` direct, ``forces_conservative`` = -dE/dr)."""
    forces = MODEL_FORCES[forces_mode]
    return model(graph, forces=forces, stress=stress and forces != "direct")


class Predictor(torch.nn.Module):
    """:func:`predictions` as a module (what DistributedDataParallel wraps)."""

    def __init__(self, model: torch.nn.Module, forces_mode: str, stress: bool):
        super().__init__()
        self.model = model
        self.forces_mode = forces_mode
        self.stress = stress

    @property
    def conservative(self) -> bool:
        """True when outputs need autograd through the positions (no ``torch.no_grad`` in evaluation)."""
        return self.forces_mode in ("conservative", "joint")

    def forward(self, graph) -> Dict[str, torch.Tensor]:
        return predictions(self.model, graph, self.forces_mode, self.stress)
