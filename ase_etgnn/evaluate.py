"""Accuracy metrics (pure numpy) and model evaluation on an HDF5 dataset.

Metrics per property (:func:`property_metrics`), computed over the *tensors* of that property (one per
structure for energy/dielectric/piezo/stress, one per atom for forces and Born charges):

* ``mae``, ``rmse``: over all Cartesian components; ``per_component_mae``: array of the tensor's shape.
* ``fnorm``: mean over tensors of the Frobenius norm of the error, ``mean_t ||pred_t - target_t||_F``
  (GMTNet Sec. 5.2; E(3) invariant, unlike the MAE).  For vectors it is the mean Euclidean error.
* ``ewt_25``, ``ewt_10``, ``ewt_5``: "error within threshold" (GMTNet Sec. 5.2), the fraction of tensors
  with ``||pred_t - target_t||_F / ||target_t||_F < x`` (x = 0.25, 0.10, 0.05).  Tensors with a zero
  label norm count as within threshold only when their error is exactly zero.  Not applicable (NaN, JSON
  null) to the energy: a DFT total energy has an arbitrary zero (about -150 eV/atom for SiO2 in QE), so
  any error relative to it is tiny (a 1.4 eV error is "within 5 %"), per atom or not (the ratio is the same).
* ``fnorm_label_mean``, ``fnorm_label_std``: Frobenius norm statistics of the labels (GMTNet Table 1).
* ``symmetry`` (dielectric, piezoelectric; via ``ase_etgnn.symmetry.success_rates``): GMTNet success
  rates in capturing symmetry-required zeros and equalities, per crystal system.
* with crystal systems given: ``fnorm_by_crystal_system`` and ``fnorm_crystal_system_mean`` (the
  average across crystal systems, as GMTNet reports it) for structure-level tensors.
* energy additionally per atom: ``mae_per_atom``, ``rmse_per_atom`` (eV/atom); parity plots of the energy
  are per atom (eV/atom), so cells of different sizes share one scale.

:func:`evaluate_model` also breaks every property's metrics down by the records' provenance ``tag``
(``by_tag``) and by the set of properties a record has labels for (``by_labels``, e.g. ``E+F+S+BEC+eps``
for ph.x cells against ``E+F+S`` for pw.x-only cells); each subset carries ``n_structures``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import spglib
import torch

from .conventions import atomic_write, crystal_system_from_number, spglib_quietly
from .dataset import collate_batch, dataset_item
from .records import RecordReader
from .graph import atoms_to_graph
from .properties import PROPERTIES, get_property_spec
from .symmetry import success_rates

__all__ = [
    "EWT_THRESHOLDS",
    "fnorm_errors",
    "ewt",
    "property_metrics",
    "crystal_system",
    "predict_dataset",
    "evaluate_model",
    "parity_plots",
    "parity_values",
    "label_set_name",
    "format_metrics_line",
]

#: short names of the properties in label-set names (``by_labels``)
_SHORT = {"energy": "E", "forces": "F", "stress": "S", "born_effective_charges": "BEC",
          "dielectric_tensor": "eps", "piezoelectric_tensor": "piezo"}

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
    for thr in EWT_THRESHOLDS:  # energy: relative to an arbitrary zero, not applicable (module docstring)
        out[f"ewt_{int(round(thr * 100))}"] = float("nan") if name == "energy" else ewt(pred, target, spec.rank, thr)
    if spec.extensive and n_atoms is not None:  # energy: also per atom
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
    """Crystal system name of ``atoms`` from spglib's space-group number ("unknown" if spglib finds none)."""
    cell = (np.asarray(atoms.get_cell()), atoms.get_scaled_positions(), atoms.get_atomic_numbers())
    with spglib_quietly():
        ds = spglib.get_symmetry_dataset(cell, symprec=symprec)
    return "unknown" if ds is None else crystal_system_from_number(ds.number)


# ------------------------------------------------------------------------------------ model evaluation
def _read_records(data_path: str, indices: Optional[Sequence[int]]) -> Tuple[List[int], List[Tuple[Any, Dict, Dict]]]:
    """``(indices, records)``: the record indices (default: all) and their ``(atoms, targets, provenance)``,
    read through one open handle."""
    with RecordReader(data_path) as reader:
        idx = list(indices) if indices is not None else list(range(len(reader)))
        reader.records(idx)  # IndexError naming the indices out of range
        return idx, [reader.read(i) for i in idx]


def _predict_records(model, records: Sequence[Tuple[Any, Dict, Dict]], batch_size: int, device, dtype,
                     properties: Optional[Sequence[str]], conservative_forces: bool) -> Dict[str, Any]:
    """:func:`predict_dataset` on records already read (``(atoms, targets, provenance)`` each)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = dtype or next(model.parameters()).dtype
    heads = [h for h in model.heads if properties is None or h in properties]
    if conservative_forces and "energy" in model.heads and (properties is None or "forces" in properties):
        heads = sorted(set(heads) | {"forces"})
    cfg = model.config  # graphs as the calculator builds them
    acc: Dict[str, Dict[str, List[np.ndarray]]] = {h: {"pred": [], "target": [], "structure": []} for h in heads}
    n_atoms_all: List[int] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(records), batch_size):
            items = [dataset_item(atoms_to_graph(atoms, cfg.cutoff, cfg.effective_triplet_cutoff), len(atoms),
                                  targets, i, prov.get("key"))
                     for i, (atoms, targets, prov) in enumerate(records[start:start + batch_size], start)]
            batch = collate_batch(items, dtype=dtype, device=device, properties=heads)
            if conservative_forces:
                out = model(batch.graph, forces="conservative")  # -dE/dr as "forces"; eval mode: detached
            else:
                with torch.no_grad():
                    out = model(batch.graph)
            struct_of_atom = np.repeat(np.arange(start, start + len(items)), batch.n_atoms.cpu().numpy())  # [N]
            struct = np.arange(start, start + len(items))  # [B]
            for h in heads:
                mask = batch.masks[h].cpu().numpy()
                acc[h]["pred"].append(out[h].detach().cpu().double().numpy()[mask])
                acc[h]["target"].append(batch.targets[h].cpu().double().numpy()[mask])
                owner = struct_of_atom if get_property_spec(h).per_atom else struct
                acc[h]["structure"].append(owner[mask])
            n_atoms_all.extend(int(it["n_atoms"]) for it in items)
    finally:
        model.train(was_training)
    props = {}
    for h in heads:
        shape = (0,) + get_property_spec(h).shape(1)[1 if get_property_spec(h).per_atom else 0:]
        props[h] = {k: (np.concatenate(v) if v else np.zeros(shape if k != "structure" else (0,)))
                    for k, v in acc[h].items()}
    return {"properties": props, "n_atoms": np.asarray(n_atoms_all)}


def predict_dataset(model, data_path: str, indices: Optional[Sequence[int]] = None, batch_size: int = 16,
                    device=None, dtype=None, properties: Optional[Sequence[str]] = None,
                    conservative_forces: bool = False) -> Dict[str, Any]:
    """Run ``model`` over a dataset; return per-property arrays of present labels and predictions.

    Returns ``{"properties": {name: {"pred": [n, ...], "target": [n, ...], "structure": [n] int}},
    "n_atoms": [n_structures], "indices": [n_structures]}``; ``structure`` is the position in
    ``indices`` of the structure each tensor belongs to.
    """
    idx, records = _read_records(data_path, indices)
    res = _predict_records(model, records, batch_size, device, dtype, properties, conservative_forces)
    return {**res, "indices": idx}


def _symmetry_metrics(name: str, atoms_list, pred: np.ndarray) -> Dict[str, Any]:
    """GMTNet zero/equality success rates (:func:`ase_etgnn.symmetry.success_rates`); a failure is reported
    in the result, never raised (an evaluation does not fail on its symmetry report)."""
    try:
        return dict(success_rates(zip(atoms_list, pred), name))
    except Exception as exc:  # noqa: BLE001 - reporting only
        return {"error": f"{type(exc).__name__}: {exc}"}


def label_set_name(labels) -> str:
    """Name of a record's set of labelled properties, in registry order, e.g. ``"E+F+S+BEC+eps"``."""
    have = set(labels)
    return "+".join(_SHORT.get(p, p) for p in PROPERTIES if p in have) or "none"


def _subset_metrics(name: str, arr: Mapping[str, np.ndarray], n_atoms: np.ndarray,
                    groups: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Metrics of property ``name`` per group of structures; ``groups[i]``: group of structure ``i``."""
    owner = np.asarray(arr["structure"]).astype(int)  # [n_tensors] structure of each tensor
    g_of = np.asarray(list(groups), dtype=object)[owner] if len(owner) else np.zeros(0, dtype=object)
    out: Dict[str, Dict[str, Any]] = {}
    for g in sorted(set(g_of.tolist())):
        sel = g_of == g  # [n_tensors] bool
        m = property_metrics(name, arr["pred"][sel], arr["target"][sel],
                             n_atoms=n_atoms[owner[sel]] if PROPERTIES[name].extensive else None)
        m["n_structures"] = int(len(np.unique(owner[sel])))
        out[str(g)] = m
    return out


def evaluate_model(model, data_path: str, indices: Optional[Sequence[int]] = None, batch_size: int = 16,
                   device=None, dtype=None, crystal_systems: bool = True, symmetry_metrics: bool = True,
                   conservative_forces: bool = False) -> Dict[str, Any]:
    """Metrics of ``model`` on ``data_path`` (optionally a subset ``indices``); JSON-serialisable dict.

    Every property's metrics include ``n_structures``, ``by_tag`` (per provenance ``tag``; records without
    one are ``"-"``) and ``by_labels`` (per set of labelled properties, :func:`label_set_name`).
    Also returns the raw arrays under the private key ``"_arrays"`` (for plots; drop it before JSON); the
    energy entry carries ``n_atoms`` per structure for per-atom plots.
    """
    _, records = _read_records(data_path, indices)  # (atoms, targets, provenance) each
    res = _predict_records(model, records, batch_size, device, dtype, None, conservative_forces)
    atoms_list = [r[0] for r in records]
    tags = [str(r[2].get("tag", "-")) for r in records]
    label_sets = [label_set_name(r[1]) for r in records]
    systems: Optional[List[str]] = [crystal_system(a) for a in atoms_list] if crystal_systems else None
    metrics: Dict[str, Any] = {}
    for name, arr in res["properties"].items():
        spec = PROPERTIES[name]
        owner = arr["structure"].astype(int)
        cs = [systems[i] for i in owner] if (systems is not None and not spec.per_atom) else None
        n_at = res["n_atoms"][owner] if spec.extensive else None
        m = property_metrics(name, arr["pred"], arr["target"], n_atoms=n_at, crystal_systems=cs)
        m["n_structures"] = int(len(np.unique(owner)))
        if symmetry_metrics and name in ("dielectric_tensor", "piezoelectric_tensor") and len(owner):
            m["symmetry"] = _symmetry_metrics(name, [atoms_list[i] for i in owner], arr["pred"])
        m["by_tag"] = _subset_metrics(name, arr, res["n_atoms"], tags)
        m["by_labels"] = _subset_metrics(name, arr, res["n_atoms"], label_sets)
        metrics[name] = m
        if spec.extensive:
            arr["n_atoms"] = n_at  # [n] atoms of each labelled structure (per-atom parity plot)
    return {"data": os.path.abspath(data_path), "n_structures": int(len(res["n_atoms"])),
            "metrics": metrics, "_arrays": res["properties"]}


def format_metrics_line(label: str, name: str, m: Mapping[str, Any], energy_per_atom: bool = True) -> str:
    """One printed line of metrics (``etgnn evaluate``); energy per atom (meV/atom) unless told otherwise."""
    if PROPERTIES[name].extensive and energy_per_atom and "mae_per_atom" in m:
        return (f"{label:36s} n {m['n']:6d}  MAE {1000 * m['mae_per_atom']:.4g}  "
                f"RMSE {1000 * m['rmse_per_atom']:.4g}  (meV/atom)")
    ewt_txt = ("EwT n/a" if not np.isfinite(m["ewt_25"]) else
               f"EwT25/10/5 {100 * m['ewt_25']:.1f}/{100 * m['ewt_10']:.1f}/{100 * m['ewt_5']:.1f} %")
    return (f"{label:36s} n {m['n']:6d}  MAE {m['mae']:.4g}  RMSE {m['rmse']:.4g}  Fnorm {m['fnorm']:.4g}  "
            f"{ewt_txt}  ({m['units']})")


def parity_values(name: str, arr: Mapping[str, np.ndarray]):
    """``(target, pred, units)`` plotted for property ``name``: all components flattened ([n * 3**rank]);
    the energy per atom (eV/atom) when ``arr`` has ``n_atoms``, so cells of different sizes share a scale."""
    t = np.asarray(arr["target"], dtype=np.float64).reshape(-1)  # [n * 3**rank]
    p = np.asarray(arr["pred"], dtype=np.float64).reshape(-1)
    units = PROPERTIES[name].units
    if PROPERTIES[name].extensive and arr.get("n_atoms") is not None:
        na = np.asarray(arr["n_atoms"], dtype=np.float64).reshape(-1)  # [n]
        t, p, units = t / na, p / na, "eV/atom"
    return t, p, units


def parity_plots(arrays: Mapping[str, Mapping[str, np.ndarray]], directory: str,
                 metrics: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[str]:
    """One parity plot PNG per property (all components, predicted vs DFT); returns the file paths."""
    from matplotlib.figure import Figure  # optional dependency; a Figure needs no pyplot backend (no global state)

    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, arr in arrays.items():
        t, p, units = parity_values(name, arr)
        if t.size == 0:
            continue
        per_atom = units == "eV/atom"
        fig = Figure(figsize=(4.2, 4.0), dpi=120)
        ax = fig.subplots()
        ax.scatter(t, p, s=4, alpha=0.5, linewidths=0)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (hi - lo + 1e-12)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.tick_params(axis="x", labelrotation=30)
        label = f"{name} per atom" if per_atom else name
        ax.set_xlabel(f"DFT {label} ({units})")
        ax.set_ylabel(f"ETGNN {label} ({units})")
        if metrics and name in metrics and "mae" in metrics[name]:
            m = metrics[name]
            if per_atom and "mae_per_atom" in m:
                title = f"MAE {1000 * m['mae_per_atom']:.3g} meV/atom, RMSE {1000 * m['rmse_per_atom']:.3g} meV/atom"
            else:
                title = f"MAE {m['mae']:.3g}, Fnorm {m['fnorm']:.3g}"
                if np.isfinite(m["ewt_25"]):
                    title += f", EwT25 {100 * m['ewt_25']:.0f}%"
            ax.set_title(title, fontsize=8)
        fig.tight_layout()
        path = os.path.join(directory, f"parity_{name}.png")
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
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
