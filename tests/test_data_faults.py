"""Faults of data import and HDF5 appends (issue 17): cut files, bad labels, symlinks, --strict, full disk,
damaged records."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from ase_etgnn import records as D
from ase_etgnn.cli import main
from ase_etgnn.records import DatasetFormatError, append_records, count_records, dataset_summary, read_record, record_keys

ROOT = Path(__file__).resolve().parents[1]


def _frames(n: int, seed: int = 0):
    import ase.io  # noqa: F401

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = bulk("GaAs", "zincblende", a=5.65)
        a.rattle(0.02, seed=seed * 100 + i)
        a.calc = SinglePointCalculator(a, energy=-8.0 + rng.normal(), forces=rng.normal(size=(2, 3)))
        out.append(a)
    return out


def _write_xyz(path: Path, n: int = 13, seed: int = 0) -> str:
    import ase.io

    ase.io.write(path, _frames(n, seed), format="extxyz")
    return path.read_text()


def _items(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(a, {"energy": float(a.calc.results["energy"]), "forces": rng.normal(size=(2, 3))}, {"i": i}, None)
            for i, a in enumerate(_frames(n, seed))]


# ------------------------------------------------------------------------------------ cut extxyz files
@pytest.mark.parametrize("where, message", [
    ("count line", r"frame 12 \(line 49\): frame header cut"),
    ("comment line", r"frame 12 \(line 49\): frame header cut"),
    ("atom lines", r"frame 12 \(line 49\): truncated: the header says 2 atoms but the file ends after 1 atom lines"),
    ("middle of a line", r"frame 12, atom 1 \(line 52\): 2 columns, expected 7"),
    ("last number", r"frame 12, atom 1 \(line 52\): the file does not end with a newline"),
])
def test_import_of_a_cut_extxyz_fails_naming_file_and_frame(tmp_path, where, message):
    raw = _write_xyz(tmp_path / "full.extxyz")
    header = raw.rfind("\n2\n") + 1  # start of the last frame (13 frames of 2 atoms: 4 lines each)
    last_line = raw.rfind("\n", 0, len(raw) - 1) + 1
    cut = {"count line": header + 1, "comment line": header + 30, "atom lines": last_line,
           "middle of a line": last_line + 10, "last number": len(raw) - 6}[where]
    src = tmp_path / "cut.extxyz"
    src.write_text(raw[:cut])
    out = tmp_path / "d.h5"
    with pytest.raises(ValueError, match=r"cut\.extxyz: " + message):
        list(__import__("ase_etgnn.importers", fromlist=["x"]).iter_import([str(src)]))
    assert main(["dataset", "import", str(src), "-o", str(out)]) == 2
    assert not out.exists()  # nothing imported from a cut file
    # the complete file imports all 13 frames
    assert main(["dataset", "import", str(tmp_path / "full.extxyz"), "-o", str(out)]) == 0
    assert count_records(out) == 13


def test_bad_labels_name_file_frame_and_atom(tmp_path, capsys):
    from ase_etgnn.importers import import_files

    raw = _write_xyz(tmp_path / "ok.extxyz", n=3)
    lines = raw.split("\n")
    # frame 1, atom 1 (line 8): a NaN force
    bad = list(lines)
    tok = bad[7].split()
    tok[4] = "nan"
    bad[7] = " ".join(tok)
    (tmp_path / "nan.extxyz").write_text("\n".join(bad))
    with pytest.raises(ValueError, match=r"nan\.extxyz frame 1: target 'forces': contains NaN or inf at atom 1"):
        import_files([str(tmp_path / "nan.extxyz")], str(tmp_path / "a.h5"))
    # frame 2, atom 0 (line 11): an unparsable number
    bad = list(lines)
    bad[10] = bad[10].replace(bad[10].split()[5], "0.1x3", 1)
    (tmp_path / "word.extxyz").write_text("\n".join(bad))
    with pytest.raises(ValueError, match=r"word\.extxyz: frame 2, atom 0 \(line 11\): column 'forces' holds '0.1x3'"):
        import_files([str(tmp_path / "word.extxyz")], str(tmp_path / "a.h5"))
    # frame 0: an unparsable energy in the comment line
    bad = list(lines)
    bad[1] = bad[1].replace("energy=", "energy=abc", 1)
    (tmp_path / "energy.extxyz").write_text("\n".join(bad))
    assert main(["dataset", "import", str(tmp_path / "energy.extxyz"), "-o", str(tmp_path / "a.h5")]) == 2
    err = capsys.readouterr().err
    assert "energy.extxyz frame 0: 'energy' is not numeric" in err and len(err.strip().splitlines()) == 1
    # frame 1: a per-atom array of the wrong shape (3 Born-charge components per atom)
    frames = _frames(2)
    frames[1].arrays["born_effective_charges"] = np.zeros((2, 3))
    import ase.io

    ase.io.write(tmp_path / "shape.extxyz", frames, format="extxyz")
    with pytest.raises(ValueError, match=r"shape\.extxyz frame 1: target 'born_effective_charges' has shape \(2, 3\)"):
        import_files([str(tmp_path / "shape.extxyz")], str(tmp_path / "a.h5"))
    assert not (tmp_path / "a.h5").exists()


# ----------------------------------------------------------------------------------- symlink, strict
def test_append_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path):
    real = tmp_path / "store" / "real.h5"
    real.parent.mkdir()
    append_records(real, _items(2, 0))
    link = tmp_path / "link.h5"
    link.symlink_to(real)
    append_records(link, _items(3, 1))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert count_records(real) == 5 and count_records(link) == 5
    assert not (tmp_path / "link.h5.lock").exists()  # one lock, beside the real file
    # through the CLI too
    _write_xyz(tmp_path / "more.extxyz", n=2, seed=5)
    assert main(["dataset", "import", str(tmp_path / "more.extxyz"), "-o", str(link)]) == 0
    assert link.is_symlink() and count_records(real) == 7


def test_strict_import_fails_on_duplicates(tmp_path, capsys):
    _write_xyz(tmp_path / "a.extxyz", n=3)
    out = tmp_path / "d.h5"
    assert main(["dataset", "import", str(tmp_path / "a.extxyz"), "-o", str(out)]) == 0
    before = out.read_bytes()
    assert main(["dataset", "import", str(tmp_path / "a.extxyz"), "-o", str(out), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "a.extxyz frame 0: duplicate of record" in err and "d.h5" in err
    assert out.read_bytes() == before
    # a duplicate inside the input is named with the earlier frame
    (tmp_path / "twice.extxyz").write_text(_write_xyz(tmp_path / "b.extxyz", n=2, seed=3) * 2)
    assert main(["dataset", "import", str(tmp_path / "twice.extxyz"), "-o", str(tmp_path / "e.h5"), "--strict"]) == 2
    assert "twice.extxyz frame 2: duplicate of " in capsys.readouterr().err
    # without --strict duplicates are skipped and counted
    assert main(["dataset", "import", str(tmp_path / "a.extxyz"), "-o", str(out)]) == 0
    assert "0 structures (3 duplicates skipped" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ full disk
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_full_disk_gives_one_line_and_keeps_the_data_set(tmp_path, monkeypatch, capsys):
    """Every write to /dev/full fails with ENOSPC: the error is one clear line, the file is unchanged."""
    out = tmp_path / "d.h5"
    append_records(out, _items(3, 0))
    before = out.read_bytes()

    def full_tmp(directory, base):
        return os.open("/dev/full", os.O_WRONLY), str(tmp_path / f".{base}.full.tmp")

    monkeypatch.setattr(D, "_create_tmp", full_tmp)
    with pytest.raises(OSError) as exc:
        append_records(out, _items(2, 1))
    assert exc.value.errno == errno.ENOSPC and "No space left on device" in str(exc.value)
    assert "the data set is unchanged" in str(exc.value)
    assert out.read_bytes() == before and count_records(out) == 3
    _write_xyz(tmp_path / "x.extxyz", n=2, seed=9)
    assert main(["dataset", "import", str(tmp_path / "x.extxyz"), "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert out.read_bytes() == before


_FILL = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from ase import Atoms
from ase_etgnn.records import append_records
rng = np.random.default_rng(int(sys.argv[3]))
items = [(Atoms("Si200", positions=rng.random((200, 3)) * 10, cell=np.eye(3) * 10, pbc=True),
          {{"forces": rng.normal(size=(200, 3))}}, {{}}, None) for _ in range(int(sys.argv[2]))]
append_records(sys.argv[1], items)
"""


def test_full_tmpfs_append_exits_cleanly(tmp_path):
    """A real full file system (1 MiB tmpfs, needs root): no HDF5 error flood, no crash, data kept."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        script = tmp_path / "fill.py"
        script.write_text(_FILL.format(root=str(ROOT)))
        path = str(mnt / "d.h5")
        assert subprocess.run([sys.executable, str(script), path, "20", "1"]).returncode == 0
        before = Path(path).read_bytes()
        p = subprocess.run([sys.executable, str(script), path, "50", "2"], capture_output=True, text=True)
        assert p.returncode == 1, p.returncode  # a Python exception, not a segfault (-11)
        assert "OSError: [Errno 28]" in p.stderr and "the data set is unchanged" in p.stderr
        assert "HDF5" not in p.stderr and len(p.stderr.splitlines()) < 15, p.stderr[:2000]
        assert Path(path).read_bytes() == before and count_records(path) == 20
        assert [q.name for q in mnt.iterdir() if q.name.endswith(".tmp")] == []
    finally:
        subprocess.run(["umount", str(mnt)])


# ------------------------------------------------------------------------------------ damaged records
def _damaged(tmp_path) -> Path:
    path = tmp_path / "d.h5"
    append_records(path, [(a, t, p, f"k{i}") for i, (a, t, p, _) in enumerate(_items(4, 0))])
    with h5py.File(path, "r+") as f:
        del f["records/r00000001/positions"]
        f["records/r00000001/positions"] = np.zeros((5, 3))  # wrong shape
        del f["records/r00000002/cell"]  # missing member
    return path


def test_damaged_records_are_named_and_info_lists_the_rest(tmp_path, capsys):
    path = _damaged(tmp_path)
    with pytest.raises(DatasetFormatError,
                       match=r"record 'r00000001' \(key 'k1'\): 'positions' has shape \(5, 3\), expected \(2, 3\)"):
        read_record(path, 1)
    with pytest.raises(DatasetFormatError, match=r"record 'r00000002' \(key 'k2'\): missing member\(s\) \['cell'\]"):
        read_record(path, 2)
    s = dataset_summary(path)
    assert s["n_records"] == 4 and s["per_target"] == {"energy": 2, "forces": 2}
    assert [(b["record"], b["key"]) for b in s["bad_records"]] == [("r00000001", "k1"), ("r00000002", "k2")]
    assert main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 damaged records" in out and "BAD record 'r00000001' (key 'k1')" in out
    assert "'positions' has shape (5, 3)" in out
    assert "energy" in out  # the rest is still listed
    assert record_keys(path) == {"k0", "k1", "k2", "k3"}


def test_training_on_a_damaged_record_names_it(tmp_path, capsys):
    path = _damaged(tmp_path)
    rc = main(["train", "--set", f"data={path}", "--output-dir", str(tmp_path / "run"), "--epochs", "1",
               "--set", "model.hidden=8", "--set", "progress=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "record 'r0000000" in err and "(key 'k" in err and len(err.strip().splitlines()) == 1, err


def test_append_without_h5py_in_memory_files(tmp_path, monkeypatch):
    """h5py < 3.12 has no File.in_memory: appends go through a BytesIO file object instead."""
    path = tmp_path / "d.h5"
    append_records(path, _items(2, 0))
    monkeypatch.delattr(h5py.File, "in_memory")
    append_records(path, _items(2, 1))
    append_records(tmp_path / "new.h5", _items(1, 2))
    assert count_records(path) == 4 and count_records(tmp_path / "new.h5") == 1
    assert read_record(path, 3)[2]["i"] == 1
