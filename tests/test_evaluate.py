"""`etgnn evaluate`: shipped model names, per-tag / per-labelled-subset breakdown, per-atom energy, bad splits."""
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "data" / "sio2_dfpt.h5"
SPLIT = ROOT / "models" / "sio2_split.json"


def test_evaluate_shipped_name_and_breakdown_by_tag_and_labels(tmp_path, monkeypatch, capsys):
    """`etgnn evaluate sio2.pt ...` from another directory finds models/sio2.pt (as the calculator does) and
    splits every property by provenance tag and by labelled subset: the model card's "forces 0.069 eV/A on
    the 22 DFPT cells" and "0.114 on the 49 pw.x cells" come out without a hand-made split."""
    from ase_etgnn.cli import main

    monkeypatch.chdir(tmp_path)  # no sio2.pt here: only the shipped model can match
    out = tmp_path / "m.json"
    assert main(["evaluate", "sio2.pt", str(DATASET), "--split", f"{SPLIT}:test", "--json", str(out),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert Path(res["model"]).name == "sio2.pt" and Path(res["model"]).is_file()
    f = res["metrics"]["forces"]
    dfpt, pw = f["by_labels"]["E+F+S+BEC+eps"], f["by_labels"]["E+F+S"]
    assert (dfpt["n_structures"], pw["n_structures"]) == (22, 49)
    assert round(dfpt["mae"], 3) == 0.069 and round(pw["mae"], 3) == 0.114  # models/sio2.md, README
    # the subsets partition the records: their MAEs, weighted by component count, give the overall MAE
    for key in ("by_labels", "by_tag"):
        parts = f[key].values()
        assert sum(p["n"] for p in parts) == f["n"] == 711
        assert sum(p["mae"] * p["n"] for p in parts) / f["n"] == pytest.approx(f["mae"], rel=1e-12)
    assert set(f["by_tag"]) == {"quartz-ph", "cristobalite-ph", "sio2-pw"}
    bec = res["metrics"]["born_effective_charges"]
    assert list(bec["by_labels"]) == ["E+F+S+BEC+eps"] and bec["by_labels"]["E+F+S+BEC+eps"]["n_structures"] == 22
    e = res["metrics"]["energy"]
    assert e["ewt_25"] is None  # relative to an arbitrary zero: not applicable (JSON null)
    assert sum(p["mae_per_atom"] * p["n"] for p in e["by_tag"].values()) / e["n"] == pytest.approx(e["mae_per_atom"])
    assert "labelled E+F+S+BEC+eps (22 str.)" in printed and "tag sio2-pw (49 str.)" in printed
    assert f"MAE {dfpt['mae']:.4g}" in printed


def test_energy_parity_and_ewt_per_atom():
    """Parity plots show energy per atom (a 9- and a 12-atom cell with the same eV/atom coincide); EwT of
    the energy is n/a (a 1.4 eV error on -2934 eV would otherwise count as within 5 %)."""
    from ase_etgnn.evaluate import format_metrics_line, parity_values, property_metrics

    arr = {"target": np.array([-326.0 * 9, -326.0 * 12]), "pred": np.array([-326.0 * 9 + 1.4, -326.0 * 12]),
           "n_atoms": np.array([9, 12])}
    t, p, units = parity_values("energy", arr)
    assert units == "eV/atom" and t == pytest.approx([-326.0, -326.0]) and p[0] == pytest.approx(-326.0 + 1.4 / 9)
    m = property_metrics("energy", arr["pred"], arr["target"], n_atoms=arr["n_atoms"])
    assert all(np.isnan(m[k]) for k in ("ewt_25", "ewt_10", "ewt_5"))
    assert m["mae_per_atom"] == pytest.approx(1.4 / 9 / 2)
    assert "EwT n/a" in format_metrics_line("energy", "energy", m, energy_per_atom=False)
    assert "(meV/atom)" in format_metrics_line("energy", "energy", m)
    t, p, units = parity_values("forces", {"target": np.ones((2, 3)), "pred": np.zeros((2, 3))})
    assert units == "eV/A" and t.shape == (6,)


def test_split_of_another_dataset_is_one_line(tmp_path, capsys):
    """A split whose indices do not exist in the data set: exit 2 and one line naming both files."""
    from ase_etgnn.cli import main

    split = tmp_path / "other_split.json"
    split.write_text(json.dumps({"train": [0], "val": [], "test": [3, 5000, 7000]}))
    assert main(["evaluate", "sio2.pt", str(DATASET), "--split", str(split), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(split) in err and str(DATASET) in err and "5000" in err
    split.write_text(json.dumps({"test": [-1]}))  # negative indices would silently count from the end
    assert main(["evaluate", "sio2.pt", str(DATASET), "--split", str(split), "--device", "cpu"]) == 2
    assert "outside" in capsys.readouterr().err
