r"""Does the committee spread rank and size the real errors? Spearman correlation and calibration curves.

    etgnn uncertainty data/sio2_dfpt.h5 --models c0.pt c1.pt c2.pt c3.pt \
        --split models/sio2_split.json:test --json committee_test.json --plot committee_calibration.png

Errors are measured like the spreads of :class:`ase_etgnn.committee.CommitteeCalculator`, so that a
calibrated committee has ``RMS(error) = RMS(std)``:

* per atom: the norm of the atom's error, ``|F_pred - F_ref|`` (eV/A), ``||Z_pred - Z_ref||_F`` (e), against
  ``forces_std`` / ``born_effective_charges_std``;
* per structure: for per-atom properties the RMS over the structure's atoms of both the per-atom errors and
  the per-atom stds; for structure properties the norm over all components, ``||eps_pred - eps_ref||_F``,
  ``|E_pred - E_ref|`` (eV), against ``dielectric_tensor_std``, ``energy_std``.

Ranking: the Spearman rank correlation between std and error (``scipy.stats.spearmanr``): 1 when the
most uncertain entries are exactly the worst predicted, 0 when the spread says nothing. Calibration: the
entries are sorted by std into equal-count bins; per bin the root mean variance (RMS of the std) is
plotted against the RMS error (Levi et al., Sensors 22, 5540 (2022)); a calibrated committee lies on the
diagonal. ``ence`` (expected normalised calibration error) is the mean of ``|RMS std - RMS error| / RMS std``
over the bins; :func:`fit_std_scale` gives the factor that calibrates the spread on average (for
``CommitteeCalculator(std_scale=...)``). Fit it on the validation split, judge it on the test split::

    etgnn uncertainty DATA --models ... --split SPLIT:val --json val.json
    etgnn uncertainty DATA --models ... --split SPLIT:test --std-scale val.json --plot test_calibrated.png
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from .committee import committee_from_files
from .conventions import atomic_write
from .evaluate import write_json
from .properties import PROPERTIES
from .records import iter_records
from .train.splits import indices_from_spec

__all__ = [
    "UNCERTAINTY_PROPERTIES",
    "UncertaintyData",
    "CalibrationCurve",
    "error_norm",
    "collect",
    "spearman",
    "calibration_curve",
    "fit_std_scale",
    "summarize",
    "plot_calibration",
    "register_cli",
    "main",
]

#: properties whose spread can be compared with labels (stress: the calculator's Voigt form is not the label's)
UNCERTAINTY_PROPERTIES = ("forces", "born_effective_charges", "dielectric_tensor", "piezoelectric_tensor", "energy")


@dataclass(frozen=True)
class UncertaintyData:
    """Predicted std and real error of one property, one entry per atom (per-atom properties) or structure.

    Attributes:
        name: property name.
        per_atom: True when the entries are atoms.
        std: (n,) committee std of each entry (units of the property).
        error: (n,) norm of the error of each entry.
        structure: (n,) index of each entry's structure in the evaluated sequence.
        mae: mean absolute error of the committee mean over all components (as ``etgnn evaluate``'s MAE).
    """

    name: str
    per_atom: bool
    std: np.ndarray
    error: np.ndarray
    structure: np.ndarray
    mae: float = float("nan")

    def per_structure(self) -> "UncertaintyData":
        """One entry per structure: RMS over its atoms of the std and of the error (unchanged if not per atom)."""
        if not self.per_atom:
            return self
        ids, inverse = np.unique(self.structure, return_inverse=True)
        count = np.bincount(inverse)

        def rms(x: np.ndarray) -> np.ndarray:
            return np.sqrt(np.bincount(inverse, weights=x**2) / count)

        return UncertaintyData(self.name, False, rms(self.std), rms(self.error), ids, self.mae)


def error_norm(pred: np.ndarray, ref: np.ndarray, per_atom: bool) -> np.ndarray:
    """Norm of the error per atom (``(N,)``, over each atom's components) or over all components (scalar)."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    if per_atom:
        return np.linalg.norm(diff.reshape(len(diff), -1), axis=1)  # (N,)
    return np.asarray(np.linalg.norm(diff.ravel()))


def collect(calc, structures: Iterable[Sequence[Any]],
            properties: Sequence[str] = ("forces", "born_effective_charges", "dielectric_tensor")
            ) -> Dict[str, UncertaintyData]:
    """Committee std and error of ``properties`` over ``structures``: ``(atoms, targets, ...)`` items, e.g.
    from ``ase_etgnn.records.iter_records``; a property missing from a structure's targets is skipped there."""
    bad = [p for p in properties if p not in UNCERTAINTY_PROPERTIES]
    if bad:
        raise ValueError(f"uncertainty of {bad} cannot be compared with labels; choose from {UNCERTAINTY_PROPERTIES}")
    parts: Dict[str, List[tuple]] = {p: [] for p in properties}
    for k, item in enumerate(structures):
        atoms, targets = item[0], item[1]
        atoms = atoms.copy()
        for name in properties:
            if name not in targets:
                continue
            per_atom = PROPERTIES[name].per_atom
            pred = calc.get_property(name, atoms)
            std = np.atleast_1d(np.asarray(calc.get_property(name + "_std", atoms), dtype=np.float64))
            err = np.atleast_1d(error_norm(pred, targets[name], per_atom))
            absdiff = np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(targets[name], dtype=np.float64)).ravel()
            parts[name].append((std, err, np.full(len(std), k), absdiff))
    out = {}
    for name, rows in parts.items():
        if rows:
            std, err, idx, absdiff = (np.concatenate(x) for x in zip(*rows))
            out[name] = UncertaintyData(name, PROPERTIES[name].per_atom, std, err, idx, float(absdiff.mean()))
    return out


def spearman(std: np.ndarray, error: np.ndarray) -> float:
    """Spearman rank correlation of predicted std and real error (NaN with < 3 entries or constant input)."""
    std, error = np.asarray(std, dtype=np.float64).ravel(), np.asarray(error, dtype=np.float64).ravel()
    ok = np.isfinite(std) & np.isfinite(error)
    std, error = std[ok], error[ok]
    if len(std) < 3 or np.ptp(std) == 0 or np.ptp(error) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(std, error)[0])


@dataclass(frozen=True)
class CalibrationCurve:
    """Binned calibration of one property: equal-count bins of increasing predicted std.

    Attributes:
        name: label (property, ``per atom`` / ``per structure``).
        rms_std: (n_bins,) RMS predicted std per bin (root mean variance).
        rms_error: (n_bins,) RMS real error per bin.
        count: (n_bins,) entries per bin.
        units: units of std and error.
    """

    name: str
    rms_std: np.ndarray
    rms_error: np.ndarray
    count: np.ndarray
    units: str = ""

    @property
    def ence(self) -> float:
        """Expected normalised calibration error: mean over bins of ``|rms_std - rms_error| / rms_std``."""
        ok = self.rms_std > 0
        return float(np.mean(np.abs(self.rms_std[ok] - self.rms_error[ok]) / self.rms_std[ok])) if ok.any() else float("nan")


def calibration_curve(std: np.ndarray, error: np.ndarray, n_bins: int = 10, name: str = "",
                      units: str = "") -> CalibrationCurve:
    """Sort entries by std, split them into ``n_bins`` equal-count bins (fewer with fewer entries), RMS per bin."""
    std, error = np.asarray(std, dtype=np.float64).ravel(), np.asarray(error, dtype=np.float64).ravel()
    if std.shape != error.shape:
        raise ValueError(f"calibration_curve: std {std.shape} and error {error.shape} differ in shape")
    ok = np.isfinite(std) & np.isfinite(error)
    order = np.argsort(std[ok], kind="stable")
    s, e = std[ok][order], error[ok][order]
    bins = [b for b in np.array_split(np.arange(len(s)), max(1, min(int(n_bins), len(s)))) if len(b)]
    return CalibrationCurve(
        name,
        np.array([np.sqrt(np.mean(s[b] ** 2)) for b in bins]),
        np.array([np.sqrt(np.mean(e[b] ** 2)) for b in bins]),
        np.array([len(b) for b in bins]),
        units,
    )


def fit_std_scale(std: np.ndarray, error: np.ndarray) -> float:
    """Factor ``a`` maximising the Gaussian likelihood of the errors with spread ``a * std`` (Musil et al.,
    JCTC 15, 906 (2019)): ``a^2 = mean(error^2 / std^2)`` over entries with ``std > 0``."""
    std, error = np.asarray(std, dtype=np.float64).ravel(), np.asarray(error, dtype=np.float64).ravel()
    ok = np.isfinite(std) & np.isfinite(error) & (std > 0)
    if not ok.any():
        raise ValueError("fit_std_scale: no entry with a positive, finite std")
    return float(np.sqrt(np.mean((error[ok] / std[ok]) ** 2)))


def summarize(data: Mapping[str, UncertaintyData], n_bins: int = 10) -> Dict[str, Dict[str, Any]]:
    """Per property and level (``per_atom`` for per-atom properties, ``per_structure`` always): number of
    entries, Spearman correlation, RMS std, RMS error, the fitted std scale, ENCE and the calibration curve."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, d in data.items():
        levels = {"per_atom": d, "per_structure": d.per_structure()} if d.per_atom else {"per_structure": d}
        out[name] = {}
        for level, x in levels.items():
            curve = calibration_curve(x.std, x.error, n_bins, f"{name} {level.replace('_', ' ')}",
                                      PROPERTIES[name].units)
            positive = bool(np.any(x.std > 0))
            out[name][level] = {
                "n": int(len(x.std)),
                "mae": x.mae,
                "spearman": spearman(x.std, x.error),
                "rms_std": float(np.sqrt(np.mean(x.std**2))),
                "rms_error": float(np.sqrt(np.mean(x.error**2))),
                "std_scale": fit_std_scale(x.std, x.error) if positive else float("nan"),
                "ence": curve.ence,
                "calibration": {"rms_std": curve.rms_std.tolist(), "rms_error": curve.rms_error.tolist(),
                                "count": curve.count.tolist()},
                "units": curve.units,
            }
    return out


def plot_calibration(curves: Sequence[CalibrationCurve], path, spearmans: Optional[Sequence[float]] = None) -> Path:
    """One log-log panel per curve: RMS error against RMS std per bin, with the diagonal; writes a PNG."""
    from matplotlib.figure import Figure  # optional dependency; a Figure needs no pyplot backend (no global state)
    from matplotlib.ticker import NullFormatter

    if not curves:
        raise ValueError("plot_calibration: no curves")
    fig = Figure(figsize=(3.6 * len(curves), 3.6))
    axes = fig.subplots(1, len(curves), squeeze=False)
    for k, (ax, c) in enumerate(zip(axes[0], curves)):
        ok = (c.rms_std > 0) & (c.rms_error > 0)
        ax.loglog(c.rms_std[ok], c.rms_error[ok], "o-", ms=4)
        vals = np.concatenate([c.rms_std[ok], c.rms_error[ok]])
        if len(vals):
            lo, hi = vals.min() / 1.5, vals.max() * 1.5
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        title = c.name
        if spearmans is not None and np.isfinite(spearmans[k]):
            title += f"\nSpearman {spearmans[k]:.2f}, ENCE {c.ence:.2f}"
        ax.set_title(title, fontsize=9)
        ax.xaxis.set_minor_formatter(NullFormatter())  # log axes within one decade: no crowded minor labels
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"RMS committee std ({c.units})" if c.units else "RMS committee std")
        ax.set_ylabel(f"RMS error ({c.units})" if c.units else "RMS error")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return path


# ------------------------------------------------------------------------------------------------ CLI
def scales_from_summary(path) -> Dict[str, float]:
    """The ``std_scale`` per property of an earlier ``etgnn uncertainty --json`` file (per atom where the
    property is per atom, else per structure), for ``CommitteeCalculator(std_scale=...)``."""
    try:
        props = json.loads(Path(path).read_text())["properties"]
        return {name: float(levels["per_atom" if "per_atom" in levels else "per_structure"]["std_scale"])
                for name, levels in props.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--std-scale {path}: not an 'etgnn uncertainty --json' summary ({exc!r})") from None


def _cmd_uncertainty(args: argparse.Namespace) -> int:
    indices = indices_from_spec(args.split, args.data)
    keep = None if indices is None else set(indices)
    scales = scales_from_summary(args.std_scale) if args.std_scale else {}
    if scales:
        print("std scaled by " + ", ".join(f"{k} {v:.3g}" for k, v in scales.items()) + f" (from {args.std_scale})")
    calc = committee_from_files(args.models, device=args.device, dtype=args.dtype, symmetrize=False,
                                std_scale=scales)
    records = (r for k, r in enumerate(iter_records(args.data, properties=args.properties))
               if keep is None or k in keep)
    data = collect(calc, records, args.properties)
    summary = summarize(data, args.bins)
    result = {"models": [str(m) for m in args.models], "data": args.data, "split": args.split,
              "std_scale": scales, "std_scale_from": args.std_scale, "properties": summary}
    for name, levels in summary.items():
        for level, m in levels.items():
            print(f"{name:24s} {level:14s} n={m['n']:6d}  MAE of the mean {m['mae']:.4g}  Spearman {m['spearman']:6.3f}  RMS std {m['rms_std']:.4g}  "
                  f"RMS error {m['rms_error']:.4g} {m['units']}  scale {m['std_scale']:.3g}  ENCE {m['ence']:.3f}")
    if args.plot:
        curves, rhos = [], []
        for name, levels in summary.items():
            for level, m in levels.items():
                c = m["calibration"]
                curves.append(CalibrationCurve(f"{name} {level.replace('_', ' ')}", np.array(c["rms_std"]),
                                               np.array(c["rms_error"]), np.array(c["count"]), m["units"]))
                rhos.append(m["spearman"])
        result["plot"] = str(plot_calibration(curves, args.plot, rhos))
    if args.json:
        write_json(result, args.json)  # NaN (e.g. no spread) as null
    return 0


def register_cli(subparsers) -> None:
    """Add ``uncertainty`` (committee spread vs real errors on a data set) to an argparse sub-parser collection."""
    p = subparsers.add_parser("uncertainty", help="does the committee spread rank the real errors? (Spearman, "
                                                  "calibration plot)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="HDF5 data set")
    p.add_argument("--models", nargs="+", required=True, help="committee model files (at least 2)")
    p.add_argument("--split", help="evaluate a split only: SPLIT_JSON[:NAME] (NAME default: test)")
    p.add_argument("--properties", nargs="+", choices=UNCERTAINTY_PROPERTIES,
                   default=["forces", "born_effective_charges", "dielectric_tensor"])
    p.add_argument("--bins", type=int, default=10, help="calibration bins (default 10)")
    p.add_argument("--std-scale", metavar="JSON", help="multiply the spreads by the scales fitted in an earlier "
                   "--json summary (fit on the validation split, judge on the test split)")
    p.add_argument("--json", help="write the summary to this JSON file")
    p.add_argument("--plot", help="write the calibration plot (PNG)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.set_defaults(func=_cmd_uncertainty)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ase_etgnn.uncertainty DATA --models MODEL MODEL [...] ...``; exit status 2 on bad settings or
    files."""
    from .cli import main as etgnn  # the package CLI registers this module's commands (import cycle otherwise)

    return etgnn(["uncertainty", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
