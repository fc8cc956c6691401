"""Forward-pass speed and memory, side by side, as ratios (issue 20). One CPU thread.

    OMP_NUM_THREADS=1 python benchmarks/forward_speed.py --baseline /path/to/old/checkout [--rounds 3]
    OMP_NUM_THREADS=1 python benchmarks/forward_speed.py --sections memory --mem-sizes 72 576 1944
    OMP_NUM_THREADS=1 python benchmarks/forward_speed.py --sections sio2 --compile   # + torch.compile (minutes)

Every case runs in its own subprocess (allocator settings are per process; peak memory is ``ru_maxrss``),
and the cases are interleaved over ``--rounds`` rounds; each prints min and median over all its steps.
Times are wall clock and process CPU time (on a loaded machine CPU time is the steadier of the two).

Sections:
* ``sio2``: ``models/sio2.pt`` all heads, direct forward, perturbed alpha-quartz 72 and 576 atoms:
  this checkout with ``configure_allocator()``, this checkout without it, and the ``--baseline`` code
  (imported from that checkout with PYTHONPATH); achieved GFLOP/s (linear layers, counted by
  ``torch.utils.flop_counter``) against the same process's fp32 matmul rate (1024^3 ``torch.mm``);
  time(576)/time(72).
* ``pyg``: an energy-only ETGNN trunk vs PyG's ``DimeNetPlusPlus`` (same hyper-parameters: hidden 128,
  4 blocks, int_emb 64, basis_emb 8, out_emb 256, 7 spherical x 6 radial, SiLU, random weights) on the
  *same* edges and triplets: a non-periodic 150-atom quartz cluster with every triplet (cutoff 5 A) and
  periodic 72-atom quartz (cutoff 6 A, triplet cutoff 4 A). PyG is fed our edge list (its radius graph is
  not timed). Needs ``pip install torch_geometric`` (benchmark only); skipped with a message without it.
* ``memory``: peak MB/atom above the resident size before the call, of the direct forward and of
  ``model(batch, forces="conservative", stress=True)`` (conservative forces + stress), this checkout vs the baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPS = {72: (2, 2, 2), 150: (4, 4, 4), 576: (4, 4, 4), 1944: (6, 6, 6)}


# ----------------------------------------------------------------------------------------------------
# worker side (one case per process)
# ----------------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """Current resident set size, MB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _quartz(n: int):
    from ase.io import read

    base = read(ROOT / "tests" / "data" / "qe_sio2_example" / "scf.in", format="espresso-in")  # perturbed 9 atoms
    return base.repeat(REPS[n])


def _cluster150():
    """150 atoms of quartz nearest to the centre of a 4x4x4 supercell, non-periodic."""
    import numpy as np

    a = _quartz(576)
    centre = a.cell.array.sum(0) / 2
    order = np.argsort(np.linalg.norm(a.positions - centre, axis=1))[:150]
    c = a[np.sort(order)]
    c.pbc = False
    c.cell = None
    return c


def _matmul_gflops(torch) -> float:
    """fp32 ``torch.mm`` rate of 1024^3, GFLOP/s, from process CPU time (one thread), best of 5."""
    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - t)
    return 2 * 1024**3 / best / 1e9


def _count_flops(torch, fn) -> float:
    from torch.utils import flop_counter
    from torch.utils.flop_counter import FlopCounterMode

    # in-place addmm_ (used by the optimised blocks) is not in torch's registry: count it as addmm
    if torch.ops.aten.addmm_ not in flop_counter.flop_registry:
        def addmm_inplace_flop(self_shape, a_shape, b_shape, *args, **kwargs) -> int:
            return 2 * a_shape[0] * a_shape[1] * b_shape[1]

        flop_counter.register_flop_formula(torch.ops.aten.addmm_)(addmm_inplace_flop)
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def _timed(fn, steps: int, faults: list | None = None) -> tuple[list, list]:
    """Wall and process-CPU seconds per call; minor page faults per call appended to ``faults``."""
    wall, cpu = [], []
    for _ in range(steps):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if faults is not None:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return wall, cpu


def worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    out: dict = {"spec": spec}
    if spec.get("mallopt"):
        from ase_etgnn.runtime import configure_allocator

        out["allocator"] = configure_allocator().applied
    import ase_etgnn
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    out["code"] = str(Path(ase_etgnn.__file__).parent.parent)
    kind = spec["kind"]
    if kind in ("sio2", "memory"):
        from ase_etgnn.model_file import load_model

        model = load_model(ROOT / "models" / "sio2.pt").eval()
        atoms = _quartz(spec["n"])
        cfg = model.config
        batch = collate_graphs([atoms_to_graph(atoms, cfg.cutoff, cfg.effective_triplet_cutoff)])

        if spec.get("mode") == "conservative":
            # the baseline checkout may predate the ``forces`` argument (then it has energy_and_derivatives)
            conservative = getattr(model, "energy_and_derivatives", None) or (
                lambda b, stress: model(b, forces="conservative", stress=stress))

            def step():
                conservative(batch, stress=True)
        else:
            def step():
                with torch.no_grad():
                    model(batch)

        if kind == "memory":
            rss0 = _rss_mb()
            step()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            out["mb_per_atom"] = (peak - rss0) / spec["n"]
            out["peak_mb"] = peak
            return out
        if spec.get("compile"):
            from ase_etgnn.runtime import compile_trunk

            t = time.perf_counter()
            status = compile_trunk(model, batch)
            out["compile_wall_s"] = time.perf_counter() - t  # the C++ compilers run in other processes
            out["compiled"] = bool(status.compiled)
            if not status.compiled:
                raise RuntimeError(status.reason)
        step()  # warm-up
        out["flops"] = _count_flops(torch, step)
        out["faults"] = []
        out["wall"], out["cpu"] = _timed(step, spec["steps"], out["faults"])
        out["matmul_gflops"] = _matmul_gflops(torch)
        return out
    if kind == "pyg":
        return _pyg_case(spec, out)
    raise ValueError(f"unknown case {kind!r}")


def _pyg_case(spec: dict, out: dict) -> dict:
    import torch

    try:
        from torch_geometric.nn.models import DimeNetPlusPlus
    except ImportError:
        out["skipped"] = "torch_geometric is not installed (pip install torch_geometric)"
        return out
    from ase_etgnn import build_model
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    cluster = spec["graph"] == "cluster150"
    atoms = _cluster150() if cluster else _quartz(72)
    cutoff, tcut = (5.0, None) if cluster else (6.0, 4.0)
    hyper = dict(hidden=128, triplet_hidden=128, n_blocks=4, int_emb=64, basis_emb=8, out_emb=256,
                 n_spherical=7, n_sbf_radial=6, n_radial=6, activation="silu", envelope="polynomial")
    ours = build_model(["Si", "O"], heads=("energy",), cutoff=cutoff, triplet_cutoff=tcut, **hyper).eval()
    ref = DimeNetPlusPlus(hidden_channels=128, out_channels=1, num_blocks=4, int_emb_size=64, basis_emb_size=8,
                          out_emb_channels=256, num_spherical=7, num_radial=6, cutoff=cutoff,
                          output_initializer="glorot_orthogonal").eval()
    g = atoms_to_graph(atoms, cutoff, ours.config.effective_triplet_cutoff)
    batch = collate_graphs([g])
    out["n_atoms"], out["n_edges"], out["n_triplets"] = g.n_atoms, g.n_edges, g.n_triplets
    z = batch["numbers"]
    n_atoms = len(z)

    def run_ours():
        with torch.no_grad():
            ours(batch)

    def run_pyg():  # DimeNetPlusPlus.forward on our edges (k -> j = src -> dst, PyG's j -> i)
        with torch.no_grad():
            pos, cell = batch["positions"], batch["cell"][0]
            src, dst, t_in, t_out = batch["edge_src"], batch["edge_dst"], batch["trip_in"], batch["trip_out"]
            vec = pos[dst] - pos[src] + batch["edge_shift"] @ cell  # [E, 3]
            dist = vec.norm(dim=-1)
            pos_jk, pos_ij = vec[t_in], vec[t_out]
            angle = torch.atan2(torch.cross(pos_ij, pos_jk, dim=1).norm(dim=-1), (pos_ij * pos_jk).sum(-1))
            rbf = ref.rbf(dist)
            sbf = ref.sbf(dist, angle, t_in)
            x = ref.emb(z, rbf, dst, src)
            p = ref.output_blocks[0](x, rbf, dst, num_nodes=n_atoms)
            for block, outb in zip(ref.interaction_blocks, ref.output_blocks[1:]):
                x = block(x, rbf, sbf, t_in, t_out)
                p = p + outb(x, rbf, dst, num_nodes=n_atoms)
            p.sum(0)

    run_ours(), run_pyg()
    out["flops_ours"] = _count_flops(torch, run_ours)
    out["flops_pyg"] = _count_flops(torch, run_pyg)
    times = {"ours": ([], []), "pyg": ([], [])}
    for _ in range(spec["steps"]):  # interleaved step by step
        for name, fn in (("ours", run_ours), ("pyg", run_pyg)):
            w, c = _timed(fn, 1)
            times[name][0].extend(w)
            times[name][1].extend(c)
    out["times"] = times
    out["matmul_gflops"] = _matmul_gflops(torch)
    return out


# ----------------------------------------------------------------------------------------------------
# driver side
# ----------------------------------------------------------------------------------------------------


def run_case(spec: dict, code: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    env.pop("ASE_ETGNN_NO_MALLOPT", None)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          env=env, cwd="/", capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(res.get("code", code)).resolve() != Path(code).resolve() and "skipped" not in res:
        raise RuntimeError(f"case {spec} imported ase_etgnn from {res['code']}, not {code}")
    return res


def _mm(xs: list) -> tuple[float, float]:
    return min(xs), statistics.median(xs)


def section_sio2(args, baseline: Path | None) -> None:
    cases = {"after": (ROOT, True), "after, no mallopt": (ROOT, False)}
    if baseline is not None:
        cases["before (baseline)"] = (baseline, False)
    acc: dict = {}
    for rnd in range(args.rounds):
        for n in (72, 576):
            for label, (code, mall) in cases.items():
                spec = {"kind": "sio2", "n": n, "mallopt": mall, "steps": args.steps}
                r = run_case(spec, code)
                a = acc.setdefault((label, n), {"wall": [], "cpu": [], "mm": [], "faults": []})
                a["faults"] += r["faults"]
                a["wall"] += r["wall"]
                a["cpu"] += r["cpu"]
                a["mm"].append(r["matmul_gflops"])
                a["flops"] = r["flops"]
            if args.compile and n == 576 and rnd == 0:  # compilation takes minutes: one round
                r = run_case({"kind": "sio2", "n": n, "mallopt": True, "steps": args.rounds * args.steps,
                              "compile": True}, ROOT)
                acc[("after + compile", n)] = {"wall": r["wall"], "cpu": r["cpu"], "mm": [r["matmul_gflops"]],
                                               "flops": r["flops"], "faults": r["faults"]}
                print(f"compile_trunk: {r['compile_wall_s']:.0f} s wall clock to compile (576 atoms)")
    print("\n== models/sio2.pt, all heads, direct forward, perturbed alpha-quartz, 1 thread ==")
    print(f"{'code':<20} {'atoms':>5} {'GFLOP':>6} {'wall min/med s':>16} {'cpu min/med s':>15} "
          f"{'GFLOP/s':>8} {'matmul':>7} {'% of mm':>8} {'faults':>8}  (GFLOP/s from cpu min; page faults/step, median)")
    for (label, n), a in acc.items():
        w, c = _mm(a["wall"]), _mm(a["cpu"])
        mm = statistics.median(a["mm"])
        rate = a["flops"] / 1e9 / c[0]  # CPU time: one thread, robust to a loaded machine
        print(f"{label:<20} {n:>5} {a['flops'] / 1e9:>6.2f} {w[0]:>7.3f} {w[1]:>7.3f} {c[0]:>7.3f} {c[1]:>7.3f} "
              f"{rate:>8.1f} {mm:>7.1f} {100 * rate / mm:>7.1f}% {statistics.median(a['faults']):>8.0f}")
    if args.compile:
        a, c = acc[("after", 576)], acc[("after + compile", 576)]
        print(f"576 atoms, compiled/eager step time: cpu min {min(c['cpu']) / min(a['cpu']):.2f}, "
              f"wall min {min(c['wall']) / min(a['wall']):.2f}")
    for label in cases:
        r_w = min(acc[(label, 576)]["wall"]) / min(acc[(label, 72)]["wall"])
        r_c = min(acc[(label, 576)]["cpu"]) / min(acc[(label, 72)]["cpu"])
        print(f"time(576)/time(72), {label}: wall {r_w:.2f}, cpu {r_c:.2f} (linear = 8)")
    if baseline is not None:
        for n in (72, 576):
            b, a, nm = acc[("before (baseline)", n)], acc[("after", n)], acc[("after, no mallopt", n)]
            print(f"{n} atoms, speed-up after vs before: wall min {min(b['wall']) / min(a['wall']):.2f}x, "
                  f"median {statistics.median(b['wall']) / statistics.median(a['wall']):.2f}x; "
                  f"cpu min {min(b['cpu']) / min(a['cpu']):.2f}x; no mallopt vs before: cpu min "
                  f"{min(b['cpu']) / min(nm['cpu']):.2f}x")


def section_pyg(args, baseline: Path | None) -> None:
    print("\n== energy-only ETGNN trunk vs PyG DimeNetPlusPlus, same edges and triplets, 1 thread ==")
    codes = {"": (ROOT, True)}
    if baseline is not None:
        codes["before "] = (baseline, False)
    for graph in ("cluster150", "quartz72"):
        acc = {(c, k): ([], []) for c in codes for k in ("ours", "pyg")}
        r = None
        for _ in range(args.rounds):
            for c, (code, mall) in codes.items():
                r = run_case({"kind": "pyg", "graph": graph, "mallopt": mall, "steps": args.steps}, code)
                if "skipped" in r:
                    print(f"PyG comparison skipped: {r['skipped']}")
                    return
                for k in ("ours", "pyg"):
                    acc[(c, k)][0].extend(r["times"][k][0])
                    acc[(c, k)][1].extend(r["times"][k][1])
        if baseline is not None:
            (bw, bc), (pw, pc) = acc[("before ", "ours")], acc[("before ", "pyg")]
            print(f"{graph}, code before: ours/PyG cpu min {min(bc) / min(pc):.2f}, wall min {min(bw) / min(pw):.2f}")
        (ow, oc), (pw, pc) = acc[("", "ours")], acc[("", "pyg")]
        print(f"{graph}: {r['n_atoms']} atoms, {r['n_edges']} edges, {r['n_triplets']} triplets; "
              f"GFLOP ours {r['flops_ours'] / 1e9:.2f}, PyG {r['flops_pyg'] / 1e9:.2f}; matmul {r['matmul_gflops']:.1f} GFLOP/s")
        print(f"  ours wall min/med {min(ow):.4f}/{statistics.median(ow):.4f} s, cpu {min(oc):.4f}/{statistics.median(oc):.4f} s")
        print(f"  PyG  wall min/med {min(pw):.4f}/{statistics.median(pw):.4f} s, cpu {min(pc):.4f}/{statistics.median(pc):.4f} s")
        print(f"  ours/PyG time: wall min {min(ow) / min(pw):.2f}, median {statistics.median(ow) / statistics.median(pw):.2f}; "
              f"cpu min {min(oc) / min(pc):.2f} (< 1: ours faster)")


def section_memory(args, baseline: Path | None) -> None:
    print("\n== peak memory above the resident size before the call, MB/atom (models/sio2.pt, 1 thread) ==")
    codes = {"after": (ROOT, True)}
    if baseline is not None:
        codes["before"] = (baseline, False)
    for n in args.mem_sizes:
        for mode in args.mem_modes:
            row = []
            for label, (code, mall) in codes.items():
                r = run_case({"kind": "memory", "n": n, "mode": mode, "mallopt": mall}, code)
                row.append(f"{label} {r['mb_per_atom']:.2f} (peak {r['peak_mb']:.0f} MB)")
            print(f"{n:>5} atoms {mode:<12} " + "; ".join(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--baseline", type=Path, help="checkout whose ase_etgnn is the 'before' code")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case and round")
    ap.add_argument("--sections", nargs="+", default=["sio2", "pyg", "memory"], choices=["sio2", "pyg", "memory"])
    ap.add_argument("--mem-sizes", type=int, nargs="+", default=[72, 576], choices=sorted(REPS))
    ap.add_argument("--mem-modes", nargs="+", default=["direct", "conservative"], choices=["direct", "conservative"])
    ap.add_argument("--compile", action="store_true", help="also time compile_trunk at 576 atoms (minutes)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.baseline is not None and not (args.baseline / "ase_etgnn" / "model.py").is_file():
        ap.error(f"--baseline {args.baseline} has no ase_etgnn/model.py")
    print(f"python {sys.version.split()[0]}; this checkout {ROOT}; baseline {args.baseline}; "
          f"{args.rounds} rounds x {args.steps} steps, interleaved")
    if "sio2" in args.sections:
        section_sio2(args, args.baseline)
    if "pyg" in args.sections:
        section_pyg(args, args.baseline)
    if "memory" in args.sections:
        section_memory(args, args.baseline)


if __name__ == "__main__":
    main()
