"""Command line interface: ``etgnn {train,evaluate,dataset,compose,dfpt,ipi-client,select,explore,uncertainty}``.

From a folder of DFT outputs to a model file::

    etgnn dataset import dft_runs/ -o data.h5
    etgnn train examples/train_config.toml --set data=data.h5 --set output_dir=runs/sio2
    etgnn evaluate runs/sio2/best.pt data.h5 --split runs/sio2/split.json:test --json metrics.json --plots plots/

After appending records, fine-tune without ever training on the old test records::

    etgnn dataset split data.h5 --extend runs/sio2/split.json --by tag -o split2.json
    etgnn train CONFIG --set init_from=runs/sio2/best.pt --set split_file=split2.json --output-dir runs/ft

One model for two data sets, each keeping its own test records::

    etgnn dataset import sio2.h5 al2o3.h5 -o joint.h5
    etgnn dataset split joint.h5 --carry sio2.h5=sio2_split.json --carry al2o3.h5=al2o3_split.json -o joint.json

Multi-process training: ``torchrun --nproc_per_node=N -m ase_etgnn.cli train CONFIG``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from . import load_model
from .calculator import resolve_model_path
from .composed import compose_files
from .conventions import resolve_device, resolve_dtype
from .dfpt import register_cli as register_dfpt
from .evaluate import evaluate_model, format_metrics_line, parity_plots, write_json
from .importers import import_files
from .ipi import EXTRAS_PROPERTIES, run_client
from .records import dataset_summary, iter_records
from .select import register_cli as register_select
from .train import load_train_config, parse_overrides, train
from .train.splits import carry_split, extend_split, indices_from_spec, load_split
from .uncertainty import register_cli as register_uncertainty

__all__ = ["main", "build_parser"]


def _cmd_train(args: argparse.Namespace) -> int:
    over = parse_overrides(args.set or [])
    for key in ("data", "output_dir", "epochs", "device"):
        val = getattr(args, key, None)
        if val is not None:
            over[key] = val
    config = load_train_config(args.config, over)
    train(config, resume=args.resume, overwrite=args.overwrite)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    dtype = None if args.dtype is None else resolve_dtype(args.dtype)
    device = resolve_device(args.device)
    model_path = resolve_model_path(args.model)  # a path, or the bare name of a shipped model
    indices = indices_from_spec(args.split, args.data)
    model = load_model(model_path, device=device, dtype=dtype)
    res = evaluate_model(model, args.data, indices=indices, batch_size=args.batch_size,
                         conservative_forces=args.forces == "conservative")
    res["model"] = str(model_path)
    if args.split:
        res["split"] = args.split
    if args.plots:
        res["plots"] = parity_plots(res["_arrays"], args.plots, res["metrics"])
    if args.json:
        write_json(res, args.json)
    print(f"{model_path} on {args.data}: {res['n_structures']} structures")
    for name, m in res["metrics"].items():
        if "mae" not in m:
            continue
        print("  " + format_metrics_line(name, name, m, energy_per_atom=False))
        if "mae_per_atom" in m:
            print("  " + format_metrics_line("energy per atom", name, m))
        for key, what in (("by_tag", "tag"), ("by_labels", "labelled")):
            groups = m.get(key, {})
            if len(groups) > 1:  # one group would repeat the line above
                for g, gm in groups.items():
                    label = f"{what} {g} ({gm['n_structures']} str.)"
                    print("  " + format_metrics_line("  " + label, name, gm))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    rep = import_files(args.inputs, args.output, key_prefix=args.key_prefix,
                       on_duplicate="error" if args.strict else "skip", require_targets=not args.keep_unlabelled)
    print(f"{args.output}: added {rep.n_added} structures ({rep.n_duplicates} duplicates skipped, "
          f"{rep.n_without_targets} without targets skipped) from {len(rep.files)} files")
    for k, v in sorted(rep.per_target.items()):
        print(f"  {k:24s} {v}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    s = dataset_summary(args.data)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    aps = s["atoms_per_structure"]
    print(f"{s['path']}: format version {s['format_version']}, {s['n_records']} structures, {s['n_atoms']} atoms "
          f"({aps['min']}-{aps['max']} per structure)")
    if s["n_incomplete_records"]:
        print(f"  {s['n_incomplete_records']} incomplete records are ignored")
    if s["bad_records"]:
        print(f"  {len(s['bad_records'])} damaged records (left out of the counts below; training and "
              "evaluation refuse them):")
        for b in s["bad_records"]:
            print(f"    BAD {b['error'].replace(s['path'] + ': ', '', 1)}")
    print("  structures per target:")
    for k, v in s["per_target"].items():
        print(f"    {k:24s} {v}")
    print("  per element: atoms (structures):")
    for k, v in s["per_element_atoms"].items():
        print(f"    {k:4s} {v} ({s['per_element_structures'][k]})")
    return 0


def _carried_subsets(spec: str, prov: Sequence[dict], data: str) -> dict:
    """``SOURCE.h5=SPLIT.json``: the subsets SPLIT gives the records of ``data`` imported from SOURCE
    (provenance ``merged_from``, written by ``etgnn dataset import``)."""
    source, sep, split_path = spec.partition("=")
    if not sep or not source or not split_path:
        raise ValueError(f"--carry {spec!r}: expected SOURCE.h5=SPLIT.json")
    keys = [p.get("key") for _, _, p in iter_records(source, properties=())]
    where = {keys[i]: name for name, v in load_split(split_path, len(keys), source).items() for i in v}
    origins = [(os.path.realpath(p["merged_from"]["file"]), p["merged_from"]["key"]) if "merged_from" in p
               else None for p in prov]
    carried = carry_split(origins, {os.path.realpath(source): where})
    if not any(carried.values()):
        raise ValueError(f"--carry {spec}: no record of {data} was imported from {source} (provenance "
                         "merged_from; merge with: etgnn dataset import SOURCE.h5 ... -o MERGED.h5)")
    placed = sum(map(len, carried.values()))
    print(f"  carried from {split_path}: train/val/test {'/'.join(str(len(v)) for v in carried.values())}"
          f"{f'; {len(where) - placed} of its records are not in {data}' if placed < len(where) else ''}")
    return carried


def _cmd_split(args: argparse.Namespace) -> int:
    if os.path.exists(args.output) and not args.force:
        raise ValueError(f"{args.output} exists; choose another name or pass --force")
    prov = [p for _, _, p in iter_records(args.data, properties=())]
    n = len(prov)
    groups = [str(p.get(args.by, "-")) for p in prov] if args.by else None
    previous = load_split(args.extend, n, args.data) if args.extend else {}
    for spec in args.carry or []:
        carried = _carried_subsets(spec, prov, args.data)
        clash = {i for name, v in carried.items() for i in v} & {i for v in previous.values() for i in v}
        if clash:
            raise ValueError(f"--carry {spec}: records {sorted(clash)[:5]} of {args.data} are already placed "
                             "(by --extend or another --carry)")
        previous = {name: sorted(list(previous.get(name, [])) + v) for name, v in carried.items()}
    split = extend_split(previous, n, args.fractions, args.seed, groups)
    with open(args.output, "w") as fh:
        json.dump(split, fh)
        fh.write("\n")
    kept_from = ", ".join(([args.extend] if args.extend else []) + (args.carry or [])) or "(none)"
    print(f"{args.output}: {n} records; kept {sum(len(v) for v in previous.values())} from {kept_from}; "
          f"train/val/test {len(split['train'])}/{len(split['val'])}/{len(split['test'])}")
    if groups is not None:
        where = {i: name for name, v in split.items() for i in v}
        for g in sorted(set(groups)):
            c = [sum(1 for i in range(n) if groups[i] == g and where.get(i) == name) for name in split]
            print(f"  {args.by} {g:24s} {c[0]}/{c[1]}/{c[2]}")
    return 0


_TRAIN_DESCRIPTION = """\
Train a model from a TOML/YAML config (every key: ase_etgnn.train.TrainConfig; see
examples/train_config.toml). Writes OUTPUT_DIR/config.json, split.json, log.jsonl, checkpoint.pt,
best.pt (the model file) and summary.json.

  etgnn train examples/train_config.toml --data data.h5 --output-dir runs/mine
  etgnn train CONFIG --set lr=1e-3 --set model.hidden=64
  etgnn train CONFIG --output-dir runs/mine --resume          # continue from checkpoint.pt

Fine-tune after appending records, never training on the old test records:

  etgnn dataset split data.h5 --extend runs/sio2/split.json --by tag -o split2.json
  etgnn train CONFIG --set init_from=runs/sio2/best.pt --set split_file=split2.json \\
      --output-dir runs/ft

Several processes or GPUs: torchrun --nproc_per_node=N -m ase_etgnn.cli train CONFIG ...
"""

_EVALUATE_DESCRIPTION = """\
Metrics of a model on a data set (or one subset of a split): MAE, RMSE, Fnorm, EwT 25/10/5 % per
property, energy per atom (meV/atom), each broken down by provenance tag and by labelled subset
(records with the same labelled properties, e.g. E+F+S+BEC+eps for ph.x cells, E+F+S for pw.x cells).

  etgnn evaluate sio2.pt data/sio2_dfpt.h5 --split models/sio2_split.json:test
  etgnn evaluate runs/mine/best.pt data.h5 --split runs/mine/split.json:test \\
      --json runs/mine/test.json --plots runs/mine/plots
"""


def _cmd_ipi_client(args: argparse.Namespace) -> int:
    extras = [e.strip() for e in (args.extras or "").split(",") if e.strip()]
    bad = [e for e in extras if e not in EXTRAS_PROPERTIES]
    if bad:
        raise ValueError(f"--extras: unknown {bad}; choose from {list(EXTRAS_PROPERTIES)}")
    try:
        run_client(args.model, args.structure, unixsocket=args.unix, host=args.host, port=args.port,
                   threads=args.threads, extras=extras, extras_every=args.extras_every, device=args.device,
                   dtype=args.dtype, forces=args.forces, stress=args.stress, symmetrize=args.symmetrize,
                   connect_timeout=args.connect_timeout)
    except ConnectionError as exc:
        print(f"etgnn ipi-client: error: {exc}", file=sys.stderr)
        return 3
    return 0


def _cmd_compose(args: argparse.Namespace) -> int:
    takes = []
    for spec in args.take:
        path, sep, props = spec.rpartition("=")
        if not sep or not path or not props:
            raise ValueError(f"--take {spec!r}: expected MODEL_FILE=PROPERTY[,PROPERTY...]")
        takes.append((str(resolve_model_path(path)), [p.strip() for p in props.split(",") if p.strip()]))
    model = compose_files(takes, args.output, note=args.note or "", average=args.average)
    sources = model.metadata["composed_from"]
    cfg = model.config
    routes = ", ".join(f"{p} <- " + (sources[cfg.members_of(p)[0]]["file"] if len(cfg.members_of(p)) == 1 else
                                     "mean(" + ", ".join(sources[m]["file"] for m in cfg.members_of(p)) + ")")
                       for p in cfg.heads)
    print(f"{args.output}: {routes}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etgnn", description="ETGNN: tensor-property graph neural networks for ASE")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("train", help="train a model (torchrun --nproc_per_node=N -m ase_etgnn.cli train ... for DDP)",
                       description=_TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="TOML or YAML training config (see examples/train_config.toml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set lr=1e-3 --set model.hidden=64 (repeatable)")
    p.add_argument("--data", help="dataset file (overrides the config)")
    p.add_argument("--output-dir", dest="output_dir", help="run directory (overrides the config)")
    p.add_argument("--epochs", type=int, help="maximum epochs (overrides the config)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 (overrides the config)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an OUTPUT_DIR that holds a run: its files move to OUTPUT_DIR/replaced-<time>/")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="metrics (MAE, RMSE, Fnorm, EwT) and parity plots of a model on a dataset",
                       description=_EVALUATE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model file (.pt), or the bare name of a shipped model (e.g. sio2.pt)")
    p.add_argument("data", help="HDF5 dataset")
    p.add_argument("--split", help="evaluate a split only: SPLIT_JSON[:NAME] (NAME default: test)")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--plots", help="write parity plots (PNG) into this directory")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None)
    p.add_argument("--forces", choices=["direct", "conservative"], default="direct")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("dataset", help="create and inspect HDF5 datasets")
    dsub = p.add_subparsers(dest="dataset_command", metavar="{import,info,split}")
    dsub.required = True
    q = dsub.add_parser("import", help="import extxyz/traj/vasprun.xml/QE outputs (files or directories)")
    q.add_argument("inputs", nargs="+", help="files or directories (walked recursively)")
    q.add_argument("-o", "--output", required=True, help="HDF5 dataset to create or append to")
    q.add_argument("--key-prefix", default="", help="prefix of target names in atoms.info/arrays (e.g. REF_)")
    q.add_argument("--strict", action="store_true", help="fail on duplicate records instead of skipping them")
    q.add_argument("--keep-unlabelled", action="store_true", help=argparse.SUPPRESS)
    q.set_defaults(func=_cmd_import)
    q = dsub.add_parser("info", help="counts per target and per element")
    q.add_argument("data")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_cmd_info)
    q = dsub.add_parser("split", help="write a train/val/test split (JSON, for split_file); --extend keeps an "
                                      "older split's records where they were")
    q.add_argument("data")
    q.add_argument("-o", "--output", required=True, help="split JSON to write")
    q.add_argument("--extend", metavar="SPLIT_JSON", help="keep these assignments, split only the other records")
    q.add_argument("--carry", action="append", metavar="SOURCE_H5=SPLIT_JSON",
                   help="records merged from SOURCE_H5 (etgnn dataset import) keep the subset SPLIT_JSON gives "
                        "them there (repeat per source): a joint model never trains on a separate model's test")
    q.add_argument("--fractions", type=float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VAL", "TEST"))
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--by", metavar="FIELD", help="split each value of this provenance field separately (e.g. tag)")
    q.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    q.set_defaults(func=_cmd_split)

    p = sub.add_parser("ipi-client", help="serve forces (and BEC/eps_inf as extras) to an i-PI server "
                                          "(docs/ipi.md); one process per client")
    p.add_argument("--model", required=True, help="model file or shipped model name (e.g. sio2.pt)")
    p.add_argument("--structure", required=True,
                   help="structure file i-PI was initialised from (species and atom order)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="unix socket /tmp/ipi_NAME (i-PI <ffsocket mode='unix'>)")
    where.add_argument("--port", type=int, help="inet port (i-PI <ffsocket mode='inet'>)")
    p.add_argument("--host", default="localhost", help="i-PI host for --port (default localhost)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this client (default 1)")
    p.add_argument("--extras", default="", metavar="LIST",
                   help="comma-separated tensors returned as i-PI extras: born_effective_charges,dielectric_tensor")
    p.add_argument("--extras-every", dest="extras_every", type=int, default=1, metavar="K",
                   help="attach the tensors to every K-th request of each bead (default 1: all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto (default cpu)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--forces", choices=["direct", "conservative"], default="direct")
    p.add_argument("--stress", action="store_true",
                   help="return the virial (needs --forces conservative; for constant-pressure runs)")
    p.add_argument("--symmetrize", action="store_true", help="symmetrise results (costly, MD frames have no symmetry)")
    p.add_argument("--connect-timeout", dest="connect_timeout", type=float, default=60.0,
                   help="seconds to keep retrying while the server starts (default 60)")
    p.set_defaults(func=_cmd_ipi_client)

    p = sub.add_parser("compose", help="one model file taking each property from another model file "
                                       "(e.g. forces from an MD model, tensors from a DFPT model)")
    p.add_argument("output", help="model file to write")
    p.add_argument("--take", action="append", required=True, metavar="MODEL_FILE=PROP[,PROP...]",
                   help="properties (heads) taken from MODEL_FILE, e.g. --take md.pt=energy,forces "
                        "--take sio2.pt=born_effective_charges,dielectric_tensor (repeat per member)")
    p.add_argument("--average", action="store_true",
                   help="a property taken from several files is their mean (an ensemble in one file; "
                        "not energy and forces)")
    p.add_argument("--note", help="a sentence stored in the file's metadata")
    p.set_defaults(func=_cmd_compose)

    register_dfpt(sub)  # etgnn dfpt {generate,seeds}
    register_select(sub)  # etgnn select, etgnn explore
    register_uncertainty(sub)  # etgnn uncertainty
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError) as exc:
        print(f"etgnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
