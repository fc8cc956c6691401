"""GMTNet symmetry-success metrics of tensor predictions (Yan et al., GMTNet, ICML 2024, Sec. 5.2-5.3,
Tables 2, 3, 5).

Symmetry-required zeros / equalities are read off the projector matrix ``P`` (flattened tensor):
element ``p`` is required to vanish when row ``P[p]`` is zero, elements ``p, q`` are required equal
when rows ``P[p] == P[q]`` (non-zero), excluding equalities already implied by the intrinsic index
symmetry (``eps_xy = eps_yx``), i.e. counting only independent (canonical) elements.  A crystal's
prediction has *zero success* when every required zero has ``|x| < 1e-5`` and *equality success* when
every required equal pair differs by ``< 1e-4`` (absolute, in the property's units).  Crystals without
any required zero (equality) are not counted for that metric.  Per-site BEC constraints use the per-atom
projector (site symmetry, orbit relations and ASR) and compare elements within one atom's tensor.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from ..conventions import CRYSTAL_SYSTEMS
from .projection import (
    INTRINSIC_SYMMETRY,
    ArrayLike,
    CrystalSymmetry,
    elastic_voigt_to_tensor,
    intrinsic_projector,
    readonly,
)

__all__ = [
    "SymmetryConstraints",
    "symmetry_constraints",
    "zero_success",
    "equality_success",
    "symmetry_success",
    "success_rates",
    "format_success_table",
]


@dataclass(frozen=True, eq=False)
class SymmetryConstraints:
    """Symmetry-required zeros and equalities of one property for one structure.

    Attributes:
        property: property name (registry name or ``"elastic_tensor"``).
        shape: shape of the property's value.
        zero: ``[n_zero]`` flat (C-order) indices of elements required to vanish.
        equal: ``[n_pairs, 2]`` flat index pairs required to be equal.
        opposite: ``[n_pairs', 2]`` flat index pairs required to be opposite (``x_p = -x_q``);
            not part of the GMTNet equality metric.
        crystal_system: crystal system of the structure.
    """

    property: str
    shape: Tuple[int, ...]
    zero: np.ndarray
    equal: np.ndarray
    opposite: np.ndarray
    crystal_system: str


def _row_constraints(P: np.ndarray, rows: np.ndarray, atol: float, P_int: Optional[np.ndarray]
                     ) -> Tuple[List[int], List[Tuple[int, int]], List[Tuple[int, int]]]:
    """Zero rows, equal and opposite row pairs of ``P`` among ``rows`` (canonical elements)."""
    zero, equal, opposite = [], [], []
    nz = []
    for p in rows:
        if np.abs(P[p]).max() < atol:
            if P_int is None or np.abs(P_int[p]).max() >= atol:
                zero.append(int(p))
        else:
            nz.append(int(p))
    for p, q in itertools.combinations(nz, 2):
        if np.abs(P[p] - P[q]).max() < atol:
            equal.append((p, q))
        elif np.abs(P[p] + P[q]).max() < atol:
            opposite.append((p, q))
    return zero, equal, opposite


def _canonical_rows(P_int: np.ndarray, atol: float) -> np.ndarray:
    """First element of each orbit of the intrinsic index permutations (independent elements)."""
    keep, seen = [], set()
    for p in range(P_int.shape[0]):
        if p in seen:
            continue
        orbit = np.nonzero(np.abs(P_int[p]) > atol)[0]
        seen.update(int(q) for q in orbit)
        keep.append(p)
    return np.array(keep, dtype=np.int64)


def symmetry_constraints(reference, property: str, asr: bool = True, symprec: float = 1e-5,
                         atol: float = 1e-8) -> SymmetryConstraints:
    """Symmetry-required zeros / equalities of ``property`` derived from the projector.

    Args:
        reference: ``ase.Atoms`` or :class:`CrystalSymmetry`.
        property: ``"dielectric_tensor"``, ``"piezoelectric_tensor"``, ``"elastic_tensor"``,
            ``"stress"`` or ``"born_effective_charges"`` (per site; ``asr`` includes the sum rule).
        atol: tolerance on projector rows (the projector entries are O(1)).
    """
    sym = reference if isinstance(reference, CrystalSymmetry) else CrystalSymmetry.from_atoms(
        reference, symprec=symprec)
    if property in INTRINSIC_SYMMETRY and INTRINSIC_SYMMETRY[property][0] >= 2:
        rank, s = INTRINSIC_SYMMETRY[property]
        P_int = intrinsic_projector(rank, s)
        P = sym.tensor_projector(rank, s)
        zero, equal, opposite = _row_constraints(P, _canonical_rows(P_int, atol), atol, P_int)
        shape = (3,) * rank
    elif property == "born_effective_charges":
        zero, equal, opposite = [], [], []
        for a in range(sym.n_atoms):
            z, e, o = _row_constraints(sym.per_atom_projector_rows(a, 2, asr=asr), np.arange(9), atol, None)
            zero += [9 * a + p for p in z]
            equal += [(9 * a + p, 9 * a + q) for p, q in e]
            opposite += [(9 * a + p, 9 * a + q) for p, q in o]
        shape = (sym.n_atoms, 3, 3)
    else:
        raise ValueError(f"no symmetry constraints for property {property!r}; expected one of "
                         "'dielectric_tensor', 'piezoelectric_tensor', 'elastic_tensor', 'stress', "
                         "'born_effective_charges'")
    return SymmetryConstraints(
        property=property, shape=shape, zero=readonly(np.array(zero, dtype=np.int64)),
        equal=readonly(np.array(equal, dtype=np.int64).reshape(-1, 2)),
        opposite=readonly(np.array(opposite, dtype=np.int64).reshape(-1, 2)),
        crystal_system=sym.crystal_system)


def _as_constraints(reference, property: Optional[str], symprec: float, asr: bool) -> SymmetryConstraints:
    if isinstance(reference, SymmetryConstraints):
        return reference
    if property is None:
        raise ValueError("property is required unless reference is a SymmetryConstraints")
    return symmetry_constraints(reference, property, asr=asr, symprec=symprec)


def _flat_pred(pred: ArrayLike, c: SymmetryConstraints) -> np.ndarray:
    x = np.asarray(pred, dtype=np.float64)
    if c.property == "elastic_tensor" and x.shape == (6, 6):
        x = elastic_voigt_to_tensor(x)
    if x.shape != c.shape:
        raise ValueError(f"prediction for {c.property} must have shape {c.shape}, got {x.shape}")
    return x.reshape(-1)


def zero_success(pred: ArrayLike, reference, property: Optional[str] = None, tol: float = 1e-5,
                 symprec: float = 1e-5, asr: bool = True) -> Optional[bool]:
    """GMTNet zero success: every symmetry-required zero has ``|x| < tol``; None if there is none.

    ``reference``: ``ase.Atoms``, :class:`CrystalSymmetry` or :class:`SymmetryConstraints`.
    """
    c = _as_constraints(reference, property, symprec, asr)
    if len(c.zero) == 0:
        return None
    return bool(np.all(np.abs(_flat_pred(pred, c)[c.zero]) < tol))


def equality_success(pred: ArrayLike, reference, property: Optional[str] = None, tol: float = 1e-4,
                     symprec: float = 1e-5, asr: bool = True) -> Optional[bool]:
    """GMTNet equality success: every symmetry-required equal pair differs by ``< tol``; None if none."""
    c = _as_constraints(reference, property, symprec, asr)
    if len(c.equal) == 0:
        return None
    x = _flat_pred(pred, c)
    return bool(np.all(np.abs(x[c.equal[:, 0]] - x[c.equal[:, 1]]) < tol))


def symmetry_success(pred: ArrayLike, reference, property: Optional[str] = None,
                     zero_tol: float = 1e-5, equal_tol: float = 1e-4, symprec: float = 1e-5,
                     asr: bool = True) -> Dict[str, Any]:
    """Both GMTNet metrics for one prediction, with diagnostics.

    Returns:
        dict: ``zero`` / ``equality`` (bool or None), ``n_zero``, ``n_equal``, ``max_zero_error``,
        ``max_equality_error`` (nan when not applicable), ``zero_error_ratio`` (GMTNet Table 8:
        ``sum |x_zero| / sum |x_nonzero|``), ``crystal_system``.
    """
    c = _as_constraints(reference, property, symprec, asr)
    x = _flat_pred(pred, c)
    zmask = np.zeros(x.size, dtype=bool)
    zmask[c.zero] = True
    zerr = np.abs(x[c.zero]).max() if len(c.zero) else float("nan")
    eerr = (np.abs(x[c.equal[:, 0]] - x[c.equal[:, 1]]).max() if len(c.equal) else float("nan"))
    denom = np.abs(x[~zmask]).sum()
    return {
        "zero": None if len(c.zero) == 0 else bool(zerr < zero_tol),
        "equality": None if len(c.equal) == 0 else bool(eerr < equal_tol),
        "n_zero": int(len(c.zero)), "n_equal": int(len(c.equal)),
        "max_zero_error": float(zerr), "max_equality_error": float(eerr),
        "zero_error_ratio": float(np.abs(x[zmask]).sum() / denom) if denom > 0 else float("nan"),
        "crystal_system": c.crystal_system,
    }


def success_rates(items: Iterable[Tuple[Any, Any]], property: str, zero_tol: float = 1e-5,
                  equal_tol: float = 1e-4, symprec: float = 1e-5, asr: bool = True
                  ) -> Dict[str, Dict[str, Any]]:
    """GMTNet success rates per crystal system (Tables 2, 3) over ``(reference, prediction)`` pairs.

    Args:
        items: pairs of (``ase.Atoms`` or :class:`CrystalSymmetry`, prediction); the prediction is the
            property's array or a results dict containing ``property``.
    Returns:
        ``{crystal_system: {"n", "n_zero", "zero_rate", "n_equal", "equality_rate"}}`` for the systems
        present (in the order triclinic ... cubic) plus ``"all"``; rates in [0, 1], nan when no crystal
        of the system has a required zero (equality); ``n_zero`` / ``n_equal`` count those crystals.
    """
    counts: Dict[str, List[int]] = {}
    for ref, pred in items:
        if isinstance(pred, Mapping):
            if property not in pred:
                raise ValueError(f"prediction dict has no {property!r}; keys: {sorted(pred)}")
            pred = pred[property]
        r = symmetry_success(pred, ref, property, zero_tol, equal_tol, symprec, asr)
        for key in (r["crystal_system"], "all"):
            c = counts.setdefault(key, [0, 0, 0, 0, 0])
            c[0] += 1
            if r["zero"] is not None:
                c[1] += 1
                c[2] += int(r["zero"])
            if r["equality"] is not None:
                c[3] += 1
                c[4] += int(r["equality"])
    order = [s for s in CRYSTAL_SYSTEMS if s in counts] + (["all"] if "all" in counts else [])
    return {k: {"n": counts[k][0], "n_zero": counts[k][1],
                "zero_rate": counts[k][2] / counts[k][1] if counts[k][1] else float("nan"),
                "n_equal": counts[k][3],
                "equality_rate": counts[k][4] / counts[k][3] if counts[k][3] else float("nan")}
            for k in order}


def format_success_table(rates: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Plain-text table of :func:`success_rates` output (percentages; '-' where not applicable)."""
    def pct(x: float) -> str:
        return "-" if x != x else f"{100 * x:.1f}%"

    lines = [title] if title else []
    lines.append(f"{'crystal system':<14} {'n':>3} {'zero (n)':>14} {'equality (n)':>16}")
    for k, r in rates.items():
        lines.append(f"{k:<14} {r['n']:>3} {pct(r['zero_rate']):>8} ({r['n_zero']:>3}) "
                     f"{pct(r['equality_rate']):>9} ({r['n_equal']:>3})")
    return "\n".join(lines)
