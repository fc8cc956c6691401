"""Accuracy metrics (pure numpy) and model evaluation on an HDF5 dataset.

Metrics per property (:func:`property_metrics`), computed over the *tensors* of that property (one per
structure for energy/dielectric/piezo/stress, one per atom for forces and Born charges):

* ``mae``, ``rmse``: over all Cartesian components; ``per_component_mae``: array of the tensor's shape.
* ``fnorm``: mean over tensors of the Frobenius norm of the error, ``mean_t ||pred_t - target_t||_F``
  (GMTNet Sec. 5.2; E(3) invariant, unlike the MAE).  For vectors it is the mean Euclidean error.
* ``ewt_25``, ``ewt_10``, ``ewt_5``: "error within threshold" (GMTNet Sec. 5.2), the fraction of tensors
  with ``||pred_t - target_t||_F / ||target_t||_F < x`` (x = 0.25, 0.10, 0.05).  Tensors with a zero
  label norm count as within threshold only when their error is exactly zero.
* ``fnorm_label_mean``, ``fnorm_label_std``: Frobenius norm statistics of the labels (GMTNet Table 1).
* ``symmetry`` (dielectric, piezoelectric; via ``ase_etgnn.symmetry.success_rates``): GMTNet success
  rates in capturing symmetry-required zeros and equalities, per crystal system.
* with crystal systems given: ``fnorm_by_crystal_system`` and ``fnorm_crystal_system_mean`` (the
  average across crystal systems, as GMTNet reports it) for structure-level tensors.
* energy additionally per atom: ``mae_per_atom``, ``rmse_per_atom`` (eV/atom).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .properties import PROPERTIES, get_property_spec

__all__ = [
    "EWT_THRESHOLDS",
    "fnorm_errors",
    "ewt",
    "property_metrics",
    "crystal_system",
    "predict_dataset",
    "evaluate_model",
    "parity_plots",
]

EWT_THRESHOLDS = (0.25, 0.10, 0.05)


def _flat(x: np.ndarray, rank: int) -> np.ndarray:
    """[n, *cart] -> [n, 3**rank] (rank 0: [n, 1])."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1) if rank > 0 else x.reshape(-1, 1)


def fnorm_errors(pred: np.ndarray, target: np.ndarray, rank: int) -> np.ndarray:
    """[n] Frobenius norms of ``pred - target`` per tensor (first axis indexes tensors)."""
    return np.linalg.norm(_flat(pred, rank) - _flat(target, rank), axis=1)


def ewt(pred: np.ndarray, target: np.ndarray, rank: int, threshold: float) -> float:
    """Fraction of tensors with ``||err||_F / ||target||_F < threshold`` (GMTNet EwT)."""
    err = fnorm_errors(pred, target, rank)
    ref = np.linalg.norm(_flat(target, rank), axis=1)
    if len(err) == 0:
        return float("nan")
    ok = np.where(ref > 0, err < threshold * ref, err == 0)
    return float(np.mean(ok))


def property_metrics(name: str, pred: np.ndarray, target: np.ndarray, n_atoms: Optional[np.ndarray] = None,
                     crystal_systems: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Metrics of one property; ``pred``/``target``: [n_tensors, *cart] arrays of present labels only.

    ``n_atoms`` ([n], energy only) adds per-atom energy errors; ``crystal_systems`` ([n] strings,
    structure-level properties only) adds Fnorm per crystal system and its average across systems.
    """
    spec = get_property_spec(name)
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction shape {pred.shape} != target shape {target.shape}")
    n = pred.shape[0] if pred.ndim else 0
    out: Dict[str, Any] = {"n": int(n), "units": spec.units}
    if n == 0:
        return out
    diff = pred - target
    out["mae"] = float(np.mean(np.abs(diff)))
    out["rmse"] = float(np.sqrt(np.mean(diff ** 2)))
    out["per_component_mae"] = np.mean(np.abs(diff), axis=0).tolist()
    err = fnorm_errors(pred, target, spec.rank)
    lab = np.linalg.norm(_flat(target, spec.rank), axis=1)
    out["fnorm"] = float(np.mean(err))
    out["fnorm_label_mean"] = float(np.mean(lab))
    out["fnorm_label_std"] = float(np.std(lab))
    for thr in EWT_THRESHOLDS:
        out[f"ewt_{int(round(thr * 100))}"] = ewt(pred, target, spec.rank, thr)
    if name == "energy" and n_atoms is not None:
        na = np.asarray(n_atoms, dtype=np.float64).reshape(-1)
        per_atom = diff.reshape(-1) / na
        out["mae_per_atom"] = float(np.mean(np.abs(per_atom)))
        out["rmse_per_atom"] = float(np.sqrt(np.mean(per_atom ** 2)))
    if crystal_systems is not None and not spec.per_atom:
        systems = np.asarray(list(crystal_systems))
        if len(systems) != n:
            raise ValueError(f"{name}: {len(systems)} crystal systems for {n} tensors")
        by = {str(s): float(np.mean(err[systems == s])) for s in sorted(set(systems.tolist()))}
        out["fnorm_by_crystal_system"] = by
        out["fnorm_crystal_system_mean"] = float(np.mean(list(by.values())))
    return out


def crystal_system(atoms, symprec: float = 1e-5) -> str:
    """Crystal system name of ``atoms`` from spglib's space-group number ("unknown" if spglib fails)."""
    try:
        import spglib
    except ImportError:  # pragma: no cover
        return "unknown"
    cell = (np.asarray(atoms.get_cell()), atoms.get_scaled_positions(), atoms.get_atomic_numbers())
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = spglib.get_symmetry_dataset(cell, symprec=symprec)
    except Exception:
        return "unknown"
    if ds is None:
        return "unknown"
    num = ds.number if hasattr(ds, "number") else ds["number"]
    for upper, system in ((2, "triclinic"), (15, "monoclinic"), (74, "orthorhombic"), (142, "tetragonal"),
                          (167, "trigonal"), (194, "hexagonal"), (230, "cubic")):
        if num <= upper:
            return system
    return "unknown"  # pragma: no cover


# ------------------------------------------------------------------------------------ model evaluation
def predict_dataset(model, data_path: str, indices: Optional[Sequence[int]] = None, batch_size: int = 16,
                    device=None, dtype=None, properties: Optional[Sequence[str]] = None,
                    conservative_forces: bool = False) -> Dict[str, Any]:
    """Run ``model`` over a dataset; return per-property arrays of present labels and predictions.

    Returns ``{"properties": {name: {"pred": [n, ...], "target": [n, ...], "structure": [n] int}},
    "n_atoms": [n_structures], "indices": [n_structures]}``; ``structure`` is the position in
    ``indices`` of the structure each tensor belongs to.
    """
    import torch

    from .data import ETGNNDataset, collate_batch

    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = dtype or next(model.parameters()).dtype
    heads = [h for h in model.heads if properties is None or h in properties]
    if conservative_forces and "energy" in model.heads and (properties is None or "forces" in properties):
        heads = sorted(set(heads) | {"forces"})
    ds = ETGNNDataset(data_path, cutoff=model.config.cutoff, triplet_cutoff=model.config.triplet_cutoff,
                      indices=indices, cache_graphs=False)
    acc: Dict[str, Dict[str, List[np.ndarray]]] = {h: {"pred": [], "target": [], "structure": []} for h in heads}
    n_atoms_all: List[int] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
            batch = collate_batch(items, dtype=dtype, device=device, properties=heads)
            if conservative_forces:
                out = model.energy_and_derivatives(batch.graph, stress=False)
                out = {k: v.detach() for k, v in out.items()}
                out["forces"] = out.pop("forces_conservative")
            else:
                with torch.no_grad():
                    out = model(batch.graph)
            struct_of_atom = np.repeat(np.arange(start, start + len(items)), batch.n_atoms.cpu().numpy())
            struct = np.arange(start, start + len(items))
            for h in heads:
                mask = batch.masks[h].cpu().numpy()
                acc[h]["pred"].append(out[h].detach().cpu().double().numpy()[mask])
                acc[h]["target"].append(batch.targets[h].cpu().double().numpy()[mask])
                owner = struct_of_atom if get_property_spec(h).per_atom else struct
                acc[h]["structure"].append(owner[mask])
            n_atoms_all.extend(int(it["n_atoms"]) for it in items)
    finally:
        model.train(was_training)
        ds.close()
    props = {}
    for h in heads:
        shape = (0,) + get_property_spec(h).shape(1)[1 if get_property_spec(h).per_atom else 0:]
        props[h] = {k: (np.concatenate(v) if v else np.zeros(shape if k != "structure" else (0,)))
                    for k, v in acc[h].items()}
    return {"properties": props, "n_atoms": np.asarray(n_atoms_all),
            "indices": list(indices) if indices is not None else list(range(len(ds)))}


def _symmetry_metrics(name: str, atoms_list, pred: np.ndarray) -> Optional[Dict[str, Any]]:
    """GMTNet zero/equality success rates via ``ase_etgnn.symmetry`` when that module provides them."""
    try:
        from . import symmetry  # type: ignore
    except Exception:
        return None
    fn = getattr(symmetry, "success_rates", None)
    if fn is None:
        return None
    try:
        return dict(fn(zip(atoms_list, pred), name))
    except Exception as exc:  # reporting only: never fail an evaluation on it
        return {"error": f"{type(exc).__name__}: {exc}"}


def evaluate_model(model, data_path: str, indices: Optional[Sequence[int]] = None, batch_size: int = 16,
                   device=None, dtype=None, crystal_systems: bool = True, symmetry_metrics: bool = True,
                   conservative_forces: bool = False) -> Dict[str, Any]:
    """Metrics of ``model`` on ``data_path`` (optionally a subset ``indices``); JSON-serialisable dict.

    Also returns the raw arrays under the private key ``"_arrays"`` (for plots; drop it before JSON).
    """
    from .data import ETGNNDataset

    res = predict_dataset(model, data_path, indices=indices, batch_size=batch_size, device=device,
                          dtype=dtype, conservative_forces=conservative_forces)
    systems: Optional[List[str]] = None
    atoms_list = None
    if crystal_systems or symmetry_metrics:
        ds = ETGNNDataset(data_path, cutoff=model.config.cutoff, indices=indices, cache_graphs=False)
        atoms_list = [ds.get_atoms_targets(i)[0] for i in range(len(ds))]
        ds.close()
        if crystal_systems:
            systems = [crystal_system(a) for a in atoms_list]
    metrics: Dict[str, Any] = {}
    for name, arr in res["properties"].items():
        spec = PROPERTIES[name]
        owner = arr["structure"].astype(int)
        cs = [systems[i] for i in owner] if (systems is not None and not spec.per_atom) else None
        n_at = res["n_atoms"][owner] if name == "energy" else None
        m = property_metrics(name, arr["pred"], arr["target"], n_atoms=n_at, crystal_systems=cs)
        if symmetry_metrics and name in ("dielectric_tensor", "piezoelectric_tensor") and len(owner):
            sm = _symmetry_metrics(name, [atoms_list[i] for i in owner], arr["pred"])
            if sm is not None:
                m["symmetry"] = sm
        metrics[name] = m
    return {"data": os.path.abspath(data_path), "n_structures": int(len(res["n_atoms"])),
            "metrics": metrics, "_arrays": res["properties"]}


def parity_plots(arrays: Mapping[str, Mapping[str, np.ndarray]], directory: str,
                 metrics: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[str]:
    """One parity plot PNG per property (all components, predicted vs DFT); returns the file paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, arr in arrays.items():
        t = np.asarray(arr["target"]).reshape(-1)
        p = np.asarray(arr["pred"]).reshape(-1)
        if t.size == 0:
            continue
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
        ax.scatter(t, p, s=4, alpha=0.5, linewidths=0)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (hi - lo + 1e-12)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        units = PROPERTIES[name].units
        ax.set_xlabel(f"DFT {name} ({units})")
        ax.set_ylabel(f"ETGNN {name} ({units})")
        if metrics and name in metrics and "mae" in metrics[name]:
            m = metrics[name]
            ax.set_title(f"MAE {m['mae']:.3g}, Fnorm {m['fnorm']:.3g}, EwT25 {100 * m['ewt_25']:.0f}%", fontsize=8)
        fig.tight_layout()
        path = os.path.join(directory, f"parity_{name}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if np.isfinite(x) else None  # NaN ("not applicable") -> null
    if isinstance(x, (np.floating, np.integer)):
        return _json_safe(x.item())
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_json(result: Mapping[str, Any], path: str) -> None:
    """Write an :func:`evaluate_model` result (without the raw arrays) as JSON (NaN written as null)."""
    clean = _json_safe({k: v for k, v in result.items() if not k.startswith("_")})
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(clean, fh, indent=2, sort_keys=True)
        fh.write("\n")
