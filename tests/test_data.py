"""HDF5 dataset format, crash safety, importers (extxyz, traj, vasprun.xml, QE) and metrics."""
from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from ase_etgnn import records as D
from ase_etgnn.dataset import ETGNNDataset, collate_batch
from ase_etgnn.records import (DatasetFormatError, RecordReader, append_record, append_records, count_records,
                               dataset_summary, read_record, record_keys)

DATA = Path(__file__).parent / "data"
QE_DIR = DATA / "qe_sio2_example"


def _gaas(seed: int = 0) -> Atoms:
    a = bulk("GaAs", "zincblende", a=5.65)
    a.rattle(0.02, seed=seed)
    return a


def _targets(rng, n: int, which=("energy", "forces", "born_effective_charges", "dielectric_tensor")):
    full = {
        "energy": rng.normal(),
        "forces": rng.normal(size=(n, 3)),
        "stress": rng.normal(size=(3, 3)),
        "born_effective_charges": rng.normal(size=(n, 3, 3)),
        "dielectric_tensor": rng.normal(size=(3, 3)),
        "piezoelectric_tensor": rng.normal(size=(3, 3, 3)),
    }
    return {k: full[k] for k in which}


# ------------------------------------------------------------------------------------ format basics
def test_round_trip_exact_values_keys_provenance(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.h5"
    t0 = _targets(rng, 2, ("energy", "forces", "stress", "born_effective_charges", "dielectric_tensor",
                           "piezoelectric_tensor"))
    t1 = _targets(rng, 2, ("born_effective_charges",))  # partial labels
    bec_no_asr = t1["born_effective_charges"].copy()
    assert abs(bec_no_asr.sum(axis=0)).max() > 1e-3  # ASR-violating on purpose: must be kept as is
    assert append_record(path, _gaas(0), t0, {"code": "test", "ecut": 50}, key="a") == 0
    assert append_record(path, _gaas(1), t1, key="b") == 1
    assert count_records(path) == 2 and record_keys(path) == {"a", "b"}
    atoms, tg, prov = read_record(path, 0)
    assert atoms.get_chemical_symbols() == ["Ga", "As"] and atoms.pbc.all()
    np.testing.assert_array_equal(atoms.positions, _gaas(0).positions)
    np.testing.assert_array_equal(atoms.cell.array, _gaas(0).cell.array)
    assert set(tg) == set(t0)
    for k in t0:
        np.testing.assert_array_equal(tg[k], np.asarray(t0[k]))
    assert prov["code"] == "test" and prov["ecut"] == 50 and prov["key"] == "a"
    _, tg1, _ = read_record(path, -1)
    assert set(tg1) == {"born_effective_charges"}  # missing targets are absent, not zero-filled
    np.testing.assert_array_equal(tg1["born_effective_charges"], bec_no_asr)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "ase_etgnn-dataset" and int(f.attrs["format_version"]) == 1
        assert "energy" in f.attrs["units"]
        assert "energy" not in f["records/r00000001/targets"]
        assert f["records/r00000000/targets/forces"].attrs["units"] == "eV/A"
    s = dataset_summary(path)
    assert s["n_records"] == 2 and s["per_target"]["born_effective_charges"] == 2 and s["per_target"]["energy"] == 1
    assert s["per_element_atoms"] == {"As": 2, "Ga": 2}


def test_validation_errors_name_file_record_and_target(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.h5"
    a = _gaas()
    with pytest.raises(ValueError, match=r"d\.h5.*'x1'.*unknown target 'bec'"):
        append_record(path, a, {"bec": np.zeros((2, 3, 3))}, key="x1")
    with pytest.raises(ValueError, match=r"'forces' has shape \(3, 3\), expected \(2, 3\)"):
        append_record(path, a, {"forces": np.zeros((3, 3))})
    with pytest.raises(ValueError, match=r"'born_effective_charges' has shape \(2, 9\)"):
        append_record(path, a, {"born_effective_charges": np.zeros((2, 9))})
    bad = _targets(rng, 2, ("dielectric_tensor",))
    bad["dielectric_tensor"][1, 2] = np.nan
    with pytest.raises(ValueError, match=r"'dielectric_tensor'.*NaN or inf"):
        append_record(path, a, bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        append_record(path, a, {"energy": np.inf})
    assert not path.exists()  # nothing was written by failed appends
    append_record(path, a, {"energy": 1.0}, key="k")
    with pytest.raises(ValueError, match="key 'k' already exists"):
        append_record(path, a, {"energy": 2.0}, key="k")
    assert append_records(path, [(a, {"energy": 2.0}, None, "k")], on_duplicate="skip") == []
    assert count_records(path) == 1
    # default keys are content hashes: the same record twice is a duplicate
    append_record(path, a, {"energy": 3.0})
    with pytest.raises(ValueError, match="already exists"):
        append_record(path, a, {"energy": 3.0})


def test_corrupt_truncated_foreign_and_missing_files(tmp_path):
    good = tmp_path / "good.h5"
    rng = np.random.default_rng(2)
    for i in range(3):
        append_record(good, _gaas(i), _targets(rng, 2))
    raw = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(raw[: len(raw) // 2])
    noise = tmp_path / "noise.h5"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    for p in (trunc, noise):
        with pytest.raises(DatasetFormatError, match=str(p.name)):
            count_records(p)
        with pytest.raises(DatasetFormatError):
            ETGNNDataset(p, cutoff=4.0)
        with pytest.raises(DatasetFormatError):  # never append to (and so never "repair") a corrupt file
            append_record(p, _gaas(), {"energy": 1.0})
    with pytest.raises(DatasetFormatError, match="not an ase_etgnn dataset"):
        read_record(foreign, 0)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        count_records(tmp_path / "missing.h5")
    assert record_keys(tmp_path / "missing.h5") == set()
    with pytest.raises(IndexError, match="out of range"):
        read_record(good, 3)
    # a record damaged on disk (wrong shape) is reported with its name
    with h5py.File(good, "r+") as f:
        del f["records/r00000001/targets/forces"]
        f["records/r00000001/targets/forces"] = np.zeros((5, 3))
    with pytest.raises(DatasetFormatError, match=r"r00000001.*'forces'"):
        read_record(good, 1)


def test_record_without_completion_marker_is_invisible(tmp_path):
    path = tmp_path / "d.h5"
    rng = np.random.default_rng(3)
    append_record(path, _gaas(0), _targets(rng, 2), key="a")
    with h5py.File(path, "r+") as f:  # simulate a half-written record (older writer / manual damage)
        g = f["records"].create_group("r00000001")
        g["numbers"] = np.array([31], dtype=np.int32)
        g.attrs["key"] = "half"
        f.attrs["next_id"] = 1
    assert count_records(path) == 1 and record_keys(path) == {"a"}
    assert dataset_summary(path)["n_incomplete_records"] == 1
    assert len(ETGNNDataset(path, cutoff=4.0)) == 1
    assert append_record(path, _gaas(1), _targets(rng, 2), key="b") == 1  # a fresh name, index 1
    assert record_keys(path) == {"a", "b"}
    with h5py.File(path, "r") as f:
        assert "r00000002" in f["records"]


def test_crash_during_append_leaves_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "d.h5"
    rng = np.random.default_rng(4)
    append_record(path, _gaas(0), _targets(rng, 2), key="a")
    before = path.read_bytes()
    real = D._write_record

    def crashing(f, rec):
        real(f, rec)  # the record is fully written in the temporary copy ...
        raise KeyboardInterrupt("simulated crash")  # ... but the process dies before the rename

    monkeypatch.setattr(D, "_write_record", crashing)
    with pytest.raises(KeyboardInterrupt):
        append_record(path, _gaas(1), _targets(rng, 2), key="b")
    monkeypatch.setattr(D, "_write_record", real)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # a temporary file left by a hard-killed writer is removed by the next writer
    (tmp_path / ".d.h5.dead.tmp").write_bytes(b"partial")
    append_record(path, _gaas(1), _targets(rng, 2), key="b")
    assert not (tmp_path / ".d.h5.dead.tmp").exists()
    assert record_keys(path) == {"a", "b"}


def _append_worker(path: str, start: int) -> None:
    rng = np.random.default_rng(start)
    for i in range(start, start + 4):
        append_record(path, _gaas(i), _targets(rng, 2, ("energy",)), key=f"k{i}")


def test_concurrent_appenders(tmp_path):
    path = str(tmp_path / "d.h5")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_worker, args=(path, s)) for s in (0, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert record_keys(path) == {f"k{i}" for i in (0, 1, 2, 3, 100, 101, 102, 103)}


# ----------------------------------------------------------------------------- dataset and collation
def test_dataset_masks_and_collation(tmp_path):
    import torch

    path = tmp_path / "d.h5"
    rng = np.random.default_rng(5)
    si = bulk("Si", "diamond", a=5.43)
    cells = [_gaas(0), si * (1, 1, 2), _gaas(2)]  # 2, 4, 2 atoms
    labels = [
        _targets(rng, 2, ("energy", "born_effective_charges")),
        _targets(rng, 4, ("forces", "dielectric_tensor")),
        _targets(rng, 2, ("born_effective_charges", "dielectric_tensor")),
    ]
    for a, t in zip(cells, labels):
        append_record(path, a, t)
    ds = ETGNNDataset(path, cutoff=4.0, triplet_cutoff=3.0)
    assert ds._file is None  # lazy: no handle opened by the constructor
    assert len(ds) == 3
    items = [ds[i] for i in range(3)]
    b = collate_batch(items, dtype=torch.float64,
                      properties=("energy", "forces", "born_effective_charges", "dielectric_tensor",
                                  "piezoelectric_tensor"))
    assert b.n_atoms.tolist() == [2, 4, 2]
    assert b.graph["numbers"].shape == (8,)
    assert b.masks["energy"].tolist() == [True, False, False]
    assert b.masks["dielectric_tensor"].tolist() == [False, True, True]
    assert b.masks["forces"].tolist() == [False] * 2 + [True] * 4 + [False] * 2
    assert b.masks["born_effective_charges"].tolist() == [True] * 2 + [False] * 4 + [True] * 2
    assert not b.masks["piezoelectric_tensor"].any()
    np.testing.assert_array_equal(b.targets["born_effective_charges"][6:].numpy(), labels[2]["born_effective_charges"])
    np.testing.assert_array_equal(b.targets["forces"][2:6].numpy(), labels[1]["forces"])
    np.testing.assert_array_equal(b.targets["dielectric_tensor"][1].numpy(), labels[1]["dielectric_tensor"])
    assert b.targets["born_effective_charges"].shape == (8, 3, 3) and b.targets["energy"].shape == (3,)
    # subset + property selection
    sub = ETGNNDataset(path, cutoff=4.0, indices=[2], properties=("dielectric_tensor",))
    assert set(sub[0]["targets"]) == {"dielectric_tensor"}
    # worker processes open their own handle (dataset pickled without one)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_batch,
                                         multiprocessing_context="fork")
    batches = list(loader)
    assert [bb.n_atoms.tolist() for bb in batches] == [[2, 4], [2]]
    ds.close()


# -------------------------------------------------------------------------------------------- import
def test_record_reader_reads_records_through_one_handle(tmp_path, monkeypatch):
    """RecordReader: records without graphs, one open; a graph dataset over its RecordSet opens the file only
    when it reads (lazily, once per process)."""
    path = tmp_path / "d.h5"
    rng = np.random.default_rng(6)
    append_records(path, [(_gaas(i), _targets(rng, 2), {"i": i}, k) for i, k in enumerate("abc")])
    opened = []

    class CountingFile(h5py.File):
        def __init__(self, name, *args, **kwargs):
            opened.append(str(name))
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", CountingFile)
    with RecordReader(path) as reader:
        assert len(reader) == 3 and reader.key(-1) == "c"
        atoms, targets, prov = reader.read(1, properties=("energy", "dielectric_tensor"))
        assert set(targets) == {"energy", "dielectric_tensor"} and prov == {"i": 1, "key": "b"}
        np.testing.assert_array_equal(atoms.positions, _gaas(1).positions)
        with pytest.raises(IndexError, match="record index 3 out of range"):
            reader.read(3)
        with pytest.raises(IndexError, match=r"indices \[3\] are out of range"):
            reader.records([0, 3])
        chosen = reader.records([2, 0])
    assert len(opened) == 1
    ds = ETGNNDataset(chosen, cutoff=4.0, triplet_cutoff=3.0)
    assert len(opened) == 1 and len(ds) == 2
    assert [(ds[i]["key"], ds[i]["index"]) for i in range(2)] == [("c", 0), ("a", 1)]
    assert len(opened) == 2
    ds.close()


def test_import_extxyz_and_traj_layouts(tmp_path):
    import ase.io

    from ase_etgnn.importers import iter_import

    rng = np.random.default_rng(6)
    frames = []
    truth = []
    for i in range(3):
        a = _gaas(i)
        t = _targets(rng, 2, ("energy", "forces", "stress", "born_effective_charges", "dielectric_tensor"))
        t["stress"] = 0.5 * (t["stress"] + t["stress"].T)
        t = {k: np.round(v, 6) for k, v in t.items()}  # extxyz writes 8 decimals
        calc_stress = np.array([t["stress"][0, 0], t["stress"][1, 1], t["stress"][2, 2],
                                t["stress"][1, 2], t["stress"][0, 2], t["stress"][0, 1]])
        a.calc = SinglePointCalculator(a, energy=float(t["energy"]), forces=t["forces"], stress=calc_stress)
        a.arrays["born_effective_charges"] = t["born_effective_charges"].reshape(2, 9)  # flattened (N, 9)
        a.info["dielectric_tensor"] = t["dielectric_tensor"].reshape(9)
        frames.append(a)
        truth.append(t)
    ase.io.write(tmp_path / "frames.extxyz", frames, format="extxyz")
    # .traj keeps calculator results (not custom arrays): BEC and dielectric as calculator results there
    for a, t in zip(frames, truth):
        a.calc = SinglePointCalculator(a, energy=float(t["energy"]), forces=t["forces"], stress=t["stress"],
                                       born_effective_charges=t["born_effective_charges"],
                                       dielectric_tensor=t["dielectric_tensor"])
    ase.io.write(tmp_path / "frames.traj", frames)
    for name in ("frames.extxyz", "frames.traj"):
        recs = list(iter_import([str(tmp_path / name)]))
        assert len(recs) == 3
        for rec, t in zip(recs, truth):
            assert set(rec.targets) == set(t), (name, set(rec.targets))
            for k in t:
                np.testing.assert_allclose(rec.targets[k], np.asarray(t[k]), rtol=1e-12, atol=1e-12, err_msg=k)
            assert rec.provenance["source"].endswith(name)


def test_import_cli_extxyz_vasprun_qe_and_info(tmp_path, capsys):
    import ase.io

    from ase_etgnn.cli import main

    rng = np.random.default_rng(7)
    # a VASP vasprun.xml with Born charges and the (electronic) dielectric tensor
    born = rng.normal(size=(2, 3, 3)).round(6)
    eps = np.array([[10.9, 0.1, 0.0], [0.1, 10.9, 0.0], [0.0, 0.0, 11.2]])
    vdir = tmp_path / "runs" / "vasp"
    vdir.mkdir(parents=True)
    (vdir / "vasprun.xml").write_text(_vasprun_xml(["Ga", "As"], np.eye(3) * 5.65, [[0, 0, 0], [0.25, 0.25, 0.25]],
                                                   -9.5, [[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]], np.eye(3) * 10.0,
                                                   born, eps))
    (vdir / "README").write_text("notes: ignored while walking a directory\n")
    # the QE worked example (pw.x + ph.x in one directory)
    qdir = tmp_path / "runs" / "qe"
    shutil.copytree(QE_DIR, qdir)
    # an extxyz with energies only
    a = _gaas(3)
    a.calc = SinglePointCalculator(a, energy=-8.0)
    ase.io.write(tmp_path / "runs" / "e.xyz", [a], format="extxyz")
    out = tmp_path / "data.h5"
    assert main(["dataset", "import", str(tmp_path / "runs"), "-o", str(out)]) == 0
    assert count_records(out) == 3
    recs = {read_record(out, i)[2]["format"]: read_record(out, i) for i in range(3)}
    atoms, t, prov = recs["vasp-xml"]
    np.testing.assert_array_equal(t["born_effective_charges"], born)  # stored as VASP wrote them
    np.testing.assert_array_equal(t["dielectric_tensor"], eps)
    np.testing.assert_allclose(t["stress"], -np.eye(3) * 10.0 * 0.1 * 1e9 / 1.602176634e-19 * 1e-30, rtol=1e-6)
    assert float(t["energy"]) == -9.5
    atoms, t, prov = recs["qe"]
    from ase_etgnn.qe import read_qe_outputs

    ref_atoms, ref_t = read_qe_outputs(qdir / "scf.out", qdir / "ph.out", pw_in=qdir / "scf.in")
    assert len(atoms) == 9 and prov["ph_out"].endswith("ph.out")
    np.testing.assert_array_equal(atoms.positions, ref_atoms.positions)
    assert set(t) == {"energy", "forces", "stress", "born_effective_charges", "dielectric_tensor"}
    for k in t:
        np.testing.assert_array_equal(t[k], ref_t[k])
    assert set(recs["extxyz"][1]) == {"energy"}
    # importing again adds nothing (content keys)
    assert main(["dataset", "import", str(tmp_path / "runs"), "-o", str(out)]) == 0
    assert count_records(out) == 3
    capsys.readouterr()
    assert main(["dataset", "info", str(out)]) == 0
    txt = capsys.readouterr().out
    assert "3 structures" in txt and "born_effective_charges   2" in txt and "Si   3 (1)" in txt


def _vasprun_xml(symbols, cell, frac, energy, forces, stress_kbar, born, eps) -> str:
    """A minimal vasprun.xml (one ionic step) with the tags ASE's vasp-xml reader uses."""

    def v(rows):
        return "\n".join("<v> " + " ".join(f"{x:.8f}" for x in r) + " </v>" for r in np.atleast_2d(rows))

    kinds = list(dict.fromkeys(symbols))
    atom_rows = "\n".join(f"<rc><c>{s}</c><c>{kinds.index(s) + 1}</c></rc>" for s in symbols)
    struct = (f'<crystal><varray name="basis">\n{v(cell)}\n</varray></crystal>\n'
              f'<varray name="positions">\n{v(frac)}\n</varray>')
    born_xml = ('<array name="born_charges"><dimension dim="1">ion</dimension>\n'
                + "\n".join(f"<set>\n{v(b)}\n</set>" for b in born) + "\n</array>")
    energy_xml = "".join(f'<i name="{n}"> {energy:.8f} </i>' for n in ("e_fr_energy", "e_wo_entrp", "e_0_energy"))
    return f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<modeling>
<generator><i name="program" type="string">vasp </i></generator>
<kpoints><varray name="kpointlist"><v> 0.0 0.0 0.0 </v></varray><varray name="weights"><v> 1.0 </v></varray></kpoints>
<parameters></parameters>
<atominfo><atoms> {len(symbols)} </atoms>
<array name="atoms"><dimension dim="1">ion</dimension><field type="string">element</field>
<field type="int">atomtype</field><set>
{atom_rows}
</set></array></atominfo>
<structure name="initialpos">{struct}</structure>
<calculation>
<scstep><energy>{energy_xml}</energy></scstep>
<structure>{struct}</structure>
<varray name="forces">
{v(forces)}
</varray>
<varray name="stress">
{v(stress_kbar)}
</varray>
<energy>{energy_xml}</energy>
{born_xml}
<varray name="dielectric_dft">
{v(eps)}
</varray>
</calculation>
<structure name="finalpos">{struct}</structure>
</modeling>
"""


# ------------------------------------------------------------------------------------------- metrics
def test_metrics_fnorm_ewt_and_invariance():
    from ase_etgnn.evaluate import ewt, property_metrics

    target = np.stack([np.eye(3) * 4.0, np.diag([1.0, 2.0, 2.0])])  # Fnorm 6.928, 3
    err = np.zeros((2, 3, 3))
    err[0, 0, 1] = 0.5  # relative error 0.5 / 6.928 = 7.2 %
    err[1, 2, 2] = 1.2  # relative error 40 %
    m = property_metrics("dielectric_tensor", target + err, target, crystal_systems=["cubic", "tetragonal"])
    assert m["n"] == 2
    assert m["fnorm"] == pytest.approx((0.5 + 1.2) / 2)
    assert m["mae"] == pytest.approx((0.5 + 1.2) / 18)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 1.44) / 18))
    assert (m["ewt_25"], m["ewt_10"], m["ewt_5"]) == (0.5, 0.5, 0.0)
    assert np.asarray(m["per_component_mae"]).shape == (3, 3)
    assert m["per_component_mae"][2][2] == pytest.approx(0.6)
    assert m["fnorm_by_crystal_system"] == {"cubic": 0.5, "tetragonal": pytest.approx(1.2)}
    assert m["fnorm_crystal_system_mean"] == pytest.approx(0.85)
    # Fnorm and EwT are rotation invariant
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    rot = lambda t: np.einsum("ia,jb,nab->nij", q, q, t)  # noqa: E731
    m2 = property_metrics("dielectric_tensor", rot(target + err), rot(target))
    assert m2["fnorm"] == pytest.approx(m["fnorm"]) and m2["ewt_10"] == m["ewt_10"]
    # zero labels: within threshold only when exact
    assert ewt(np.zeros((2, 3)), np.zeros((2, 3)), 1, 0.25) == 1.0
    assert ewt(np.ones((1, 3)), np.zeros((1, 3)), 1, 0.25) == 0.0
    e = property_metrics("energy", np.array([1.0, 2.0]), np.array([0.0, 0.0]), n_atoms=np.array([2, 4]))
    assert e["mae_per_atom"] == pytest.approx(0.5) and e["fnorm"] == pytest.approx(1.5)
    assert property_metrics("forces", np.zeros((0, 3)), np.zeros((0, 3)))["n"] == 0


def test_merge_h5_skips_records_already_present_under_any_key(tmp_path):
    """Issue 5: records from ../shared/data are merged without duplicates."""
    from ase.build import bulk

    from ase_etgnn.records import append_record, count_records, iter_records
    from ase_etgnn.importers import import_files

    def rec(shift):
        a = bulk("Si", "diamond", a=5.43)
        a.positions[0] += shift
        return a, {"energy": np.array(-10.0 - shift), "forces": np.full((2, 3), shift)}

    ours, shared = str(tmp_path / "ours.h5"), str(tmp_path / "shared.h5")
    append_record(ours, *rec(0.01), provenance={"who": "driver"}, key="quartz-ph-1-0")
    append_record(shared, *rec(0.01), key="someone-else-7")  # same numbers, other key
    append_record(shared, *rec(0.02))
    report = import_files([shared], ours)
    assert (report.n_added, report.n_duplicates) == (1, 1)
    assert report.per_target == {"energy": 1, "forces": 1}  # the added record's targets, not the duplicate's
    assert count_records(ours) == 2
    again = import_files([shared], ours)
    assert again.n_added == 0 and count_records(ours) == 2
    merged = list(iter_records(ours))[1][2]
    assert merged["merged_from"]["file"] == shared


def test_piezoelectric_and_stress_import_layouts():
    """Voigt (3, 6) piezo e_iJ with J = xx yy zz yz xz xy, flat 18/27, and Voigt-6 stress map to the same tensor."""
    from ase_etgnn.importers import _normalise_layout

    rng = np.random.default_rng(5)
    e = rng.normal(size=(3, 3, 3))
    e = 0.5 * (e + e.transpose(0, 2, 1))  # e_ijk = e_ikj
    pairs = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    voigt = np.array([[e[i, j, k] for j, k in pairs] for i in range(3)])  # [3, 6]
    for given in (voigt, voigt.reshape(18), e.reshape(27)):
        out = _normalise_layout("piezoelectric_tensor", given, 4, "test")
        assert np.array_equal(out, e), given.shape
    s = rng.normal(size=(3, 3))
    s = s + s.T
    s6 = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    assert np.array_equal(_normalise_layout("stress", s6, 4, "test"), s)
    assert np.array_equal(_normalise_layout("stress", s.reshape(9), 4, "test"), s)
