"""Target normalisation fitted on the training split, and the loss scale of every loss term.

The model predicts ``scale * raw + reference`` per head (``ETGNN.set_normalization``).  The rule follows
from a property's registry entry (``ase_etgnn.properties``):

* heads of rank 0 (an extensive total: the energy): per-species eV/atom reference from a least-squares fit
  of the totals on composition; scale = std of the per-atom residual;
* heads of rank 2, per atom (Born charges): per-species mean isotropic part (trace/3) as reference, std of
  the remainder as scale;
* heads of rank 2, per structure (dielectric tensor): mean isotropic part as reference, std of the
  remainder as scale;
* everything else (forces, piezoelectric tensor, and stress, which no head predicts): rms component, no
  reference (the model takes references for heads of rank 0 and 2 only).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers

from ..properties import PROPERTIES, TENSOR_HEADS, loss_target

__all__ = ["compute_normalization", "loss_scales"]


def _rule(name: str) -> str:
    """How property ``name`` is normalised (module docstring)."""
    spec = PROPERTIES[name]
    if name not in TENSOR_HEADS or spec.rank not in (0, 2):
        return "rms"
    if spec.rank == 0:
        return "composition"
    return "species_isotropic" if spec.per_atom else "isotropic"


def _safe(x: float) -> float:
    """A usable scale: ``x``, or 1 where it would be zero or not finite."""
    return float(x) if np.isfinite(x) and x > 1e-8 else 1.0


def compute_normalization(numbers: Sequence[np.ndarray], targets: Sequence[Mapping[str, np.ndarray]],
                          species: Sequence[str], heads: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Normalisation per head from training data: ``{name: {"scale": float, "reference": ...}}``.

    ``numbers[s]``: [n_atoms] atomic numbers of structure ``s``; ``targets[s]``: its labels (registry units).
    ``reference`` is a per-species list (energy eV/atom, Born-charge isotropic part), a float
    (dielectric isotropic part) or None.  Scales that would be zero fall back to 1.  Heads without any
    label are left out.
    """
    z_of = [atomic_numbers[s] for s in species]
    out: Dict[str, Dict[str, Any]] = {}
    for h in heads:
        sel = [(num, t[h]) for num, t in zip(numbers, targets) if h in t]
        if not sel:
            continue
        rule = _rule(h)
        if rule == "composition":
            comp = np.array([[np.sum(num == z) for z in z_of] for num, _ in sel], dtype=float)  # [S, n_species]
            e = np.array([float(v) for _, v in sel])  # [S]
            ref, *_ = np.linalg.lstsq(comp, e, rcond=None)  # [n_species] per atom
            n_at = comp.sum(axis=1)  # [S]
            resid = (e - comp @ ref) / n_at  # [S] per atom
            scale = _safe(np.std(resid)) if len(sel) > 1 else 1.0
            out[h] = {"scale": scale, "reference": ref.tolist()}
        elif rule == "species_isotropic":
            num = np.concatenate([n for n, _ in sel])  # [N]
            z = np.concatenate([v for _, v in sel])  # [N, 3, 3]
            iso = np.trace(z, axis1=1, axis2=2) / 3.0  # [N]
            ref = np.array([iso[num == zz].mean() if np.any(num == zz) else 0.0 for zz in z_of])  # [n_species]
            unknown = sorted(set(num.tolist()) - set(z_of))
            if unknown:
                raise ValueError(f"atomic numbers {unknown} are not in species {list(species)}")
            idx = np.array([z_of.index(int(k)) for k in num])  # [N] species index
            rest = z - ref[idx][:, None, None] * np.eye(3)  # [N, 3, 3]
            out[h] = {"scale": _safe(np.std(rest)), "reference": ref.tolist()}
        elif rule == "isotropic":
            t = np.stack([v for _, v in sel])  # [S, 3, 3]
            ref = float(np.mean(np.trace(t, axis1=1, axis2=2) / 3.0))
            out[h] = {"scale": _safe(np.std(t - ref * np.eye(3))), "reference": ref}
        else:
            vals = np.concatenate([np.asarray(v).reshape(-1) for _, v in sel])  # all components
            out[h] = {"scale": _safe(np.sqrt(np.mean(vals ** 2))), "reference": None}
    return out


def loss_scales(normalization: Mapping[str, Mapping[str, Any]], loss_names: Sequence[str],
                numbers: Sequence[np.ndarray], targets: Sequence[Mapping[str, np.ndarray]],
                species: Sequence[str]) -> Dict[str, float]:
    """The scale each loss term is divided by (``normalize_loss``): the head's normalisation scale; for a term
    without a head of its name, the scale of the head it is compared with (``forces_conservative``:
    ``forces``) or, without such a head either (conservative forces, stress), one fitted on the training
    labels (1 without labels)."""
    scales = {name: float(v["scale"]) for name, v in normalization.items()}
    for name in loss_names:
        if name in scales:
            continue
        target = loss_target(name)
        if target not in scales:
            fitted = compute_normalization(numbers, targets, species, [target])
            scales[target] = float(fitted.get(target, {"scale": 1.0})["scale"])
        scales[name] = scales[target]
    return scales
