"""Selected vs random new records (issue 15): the same fine-tune with N actively selected or N random records.

    OMP_NUM_THREADS=1 nohup python benchmarks/selected_vs_random.py --recipe models/sio2_finetune.toml \
        --epochs 30 --set lr=5e-5 --weights last > runs/selected_vs_random.log &
    python benchmarks/selected_vs_random.py --weights last --report-only

Both arms start from ``--init`` (default the shipped model) with the same recipe (``--recipe``, default
``models/sio2_joint.toml``; ``--epochs`` and ``--set`` override it) and the same split, whose training part gets
N extra records: arm ``selected`` the records tagged ``--selected-tag`` (default ``al-1``, every one labelled so
far), arm ``random`` the first N records tagged ``--random-tag`` (default ``cristobalite-ph``) that come after
the split (unseen by the shipped model). Both arms are evaluated on the split's test part and on the random-tag
records after the split that neither arm trained on ("unseen"). Runs resume where they stopped.

``--weights best`` evaluates each arm's best validation epoch (``best.pt``). The starting weights compete for
it, and the validation part is mostly quartz while the new records are mostly cristobalite, so a short
fine-tune can export the starting model unchanged (both arms then equal). ``--weights last`` evaluates both arms
after the same number of epochs (the weights of ``checkpoint.pt``): a fixed budget, with a small learning rate.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

from ase_etgnn import load_model
from ase_etgnn.conventions import atomic_write_text
from ase_etgnn.evaluate import evaluate_model
from ase_etgnn.records import iter_records
from ase_etgnn.train import load_train_config, parse_overrides, train
from ase_etgnn.train.splits import read_split

ROOT = Path(__file__).resolve().parent.parent
PROPS = ("born_effective_charges", "dielectric_tensor", "forces")


def arms(data: str, split: Dict[str, List[int]], selected_tag: str, random_tag: str) -> Dict[str, List[int]]:
    """Record indices of the two arms (same N) and of the unseen evaluation set."""
    in_split = {i for v in split.values() for i in v}
    tags = [p.get("tag") for _, _, p in iter_records(data, properties=())]
    selected = [i for i, t in enumerate(tags) if t == selected_tag and i not in in_split]
    later = [i for i, t in enumerate(tags) if t == random_tag and i not in in_split and i > max(in_split)]
    n = len(selected)
    if n == 0 or len(later) < n + 1:
        raise SystemExit(f"need >= 1 '{selected_tag}' record and more than as many later '{random_tag}' records; "
                         f"have {n} and {len(later)}")
    return {"selected": selected, "random": later[:n], "unseen": later[n:]}


def run_arm(args, name: str, extra: List[int], split: Dict[str, List[int]]) -> Path:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    arm_split = {"train": sorted(split["train"] + extra), "val": split["val"], "test": split["test"]}
    split_path = out / "arm_split.json"
    if split_path.exists() and json.loads(split_path.read_text()) != arm_split:
        raise SystemExit(f"{split_path}: a different arm was run here (more records labelled since?); use a new --out")
    atomic_write_text(split_path, json.dumps(arm_split) + "\n")
    over = {"data": args.data, "output_dir": str(out), "split_file": str(split_path), "init_from": args.init}
    if args.epochs is not None:
        over["epochs"] = args.epochs
    over.update(parse_overrides(args.set or []))
    if not (out / "summary.json").exists():
        train(load_train_config(args.recipe, over), resume=(out / "checkpoint.pt").exists())
    return out


def last_weights(model, run_dir: Path):
    """``model`` (the run's ``best.pt``: same architecture and normalisation) with the weights of the run's last
    epoch (``checkpoint.pt``)."""
    import torch

    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    return model


def report(args, sets: Dict[str, List[int]], split: Dict[str, List[int]]) -> int:
    evals = {"test split": split["test"], f"unseen {args.random_tag}": sets["unseen"]}
    print(f"N = {len(sets['selected'])} extra records per arm; unseen set: {len(sets['unseen'])} records")
    print(f"{'arm':10s} {'set':28s} " + " ".join(f"{p[:10]:>10s}" for p in PROPS))
    models = {"start": args.init, **{a: str(Path(args.out) / a / "best.pt") for a in ("selected", "random")}}
    per_cell: Dict[str, np.ndarray] = {}
    for arm, path in models.items():
        if not Path(path).exists() or (arm != "start" and not (Path(path).parent / "summary.json").exists()):
            print(f"{arm}: not finished", file=sys.stderr)
            continue
        model = load_model(path)
        if arm != "start" and args.weights == "last":
            model = last_weights(model, Path(path).parent)
        for label, idx in evals.items():
            res = evaluate_model(model, args.data, indices=idx)
            print(f"{arm:10s} {label:28s} " + " ".join(f"{res['metrics'].get(p, {}).get('mae', float('nan')):10.4f}"
                                                       for p in PROPS))
            if label.startswith("unseen") and arm != "start":
                per_cell[arm] = per_structure_mae(res, "born_effective_charges")
    if len(per_cell) == 2:
        d = per_cell["selected"] - per_cell["random"]  # [n] e, paired by cell
        rng = np.random.default_rng(0)
        boot = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(10000)])
        print(f"unseen, BEC MAE per cell, selected - random: mean {d.mean():+.4f} e, 95 % bootstrap interval "
              f"[{np.percentile(boot, 2.5):+.4f}, {np.percentile(boot, 97.5):+.4f}]; selected better on "
              f"{int(np.sum(d < 0))} of {len(d)} cells")
    return 0


def per_structure_mae(res: Dict, name: str) -> np.ndarray:
    """MAE of ``name`` per structure (ascending structure order) from ``evaluate_model``'s raw arrays."""
    arr = res["_arrays"][name]
    owner = np.asarray(arr["structure"], dtype=int)  # [rows]
    err = np.abs(np.asarray(arr["pred"]) - np.asarray(arr["target"])).reshape(len(owner), -1).mean(axis=1)
    return np.array([err[owner == s].mean() for s in np.unique(owner)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "models" / "sio2_joint.toml"))
    ap.add_argument("--init", default=str(ROOT / "models" / "sio2.pt"))
    ap.add_argument("--data", default=str(ROOT / "data" / "sio2_dfpt.h5"))
    ap.add_argument("--split", default=str(ROOT / "models" / "sio2_split.json"))
    ap.add_argument("--selected-tag", default="al-1")
    ap.add_argument("--random-tag", default="cristobalite-ph")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="more recipe overrides")
    ap.add_argument("--out", default=str(ROOT / "runs" / "selected_vs_random"))
    ap.add_argument("--weights", choices=("best", "last"), default="best",
                    help="evaluate each arm's best validation epoch (best.pt; the starting weights compete, so a "
                         "short fine-tune may export them unchanged) or its last epoch (fixed budget)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    split = read_split(args.split)
    sets = arms(args.data, split, args.selected_tag, args.random_tag)
    if not args.report_only:
        for arm in ("selected", "random"):
            run_arm(args, arm, sets[arm], split)
    return report(args, sets, split)


if __name__ == "__main__":
    sys.exit(main())
