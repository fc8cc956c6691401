"""Joint force matching: the direct forces head and -dE/dr of the energy head trained on the same labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_etgnn.records import append_records
from ase_etgnn.train import TrainConfig, train

from test_train import TINY, _structures


@pytest.fixture(scope="module")
def conservative_data(tmp_path_factory):
    """12 three-atom SiO2 cells labelled with energy and conservative forces of a random teacher."""
    from ase_etgnn import build_model
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    hyper = dict(TINY)
    cutoff = hyper.pop("cutoff")
    teacher = build_model(["O", "Si"], heads=("energy",), cutoff=cutoff, seed=7, dtype=torch.float64, **hyper)
    teacher.set_normalization("energy", 200.0, [-4.0, -8.0])  # forces of order 1 eV/A
    items = []
    for a in _structures(12, 3):
        b = collate_graphs([atoms_to_graph(a, cutoff, hyper["triplet_cutoff"])], dtype=torch.float64)
        o = teacher(b, forces="conservative")
        t = {"energy": np.array(float(o["energy"][0].detach())), "forces": o["forces"].detach().numpy()}
        items.append((a, t, {"teacher_seed": 7}, None))
    path = tmp_path_factory.mktemp("cons") / "cons.h5"
    append_records(path, items)
    return path


def test_joint_mode_trains_both_force_paths_against_the_force_labels(conservative_data, tmp_path):
    cfg = TrainConfig(data=str(conservative_data), output_dir=str(tmp_path / "joint"), model=dict(TINY),
                      dtype="float64", batch_size=2, epochs=15, lr=1e-2, progress=False, forces_mode="joint",
                      heads=("energy", "forces"), loss_weights={"forces_conservative": 2.0})
    res = train(cfg)
    first, best = res.history[0]["val_mae"], res.history[res.best_epoch]["val_mae"]
    assert set(first) == {"energy", "forces", "forces_conservative"}
    assert best["forces_conservative"] < 0.7 * first["forces_conservative"]  # -dE/dr learns
    assert best["forces"] < first["forces"]  # and so does the direct head
    # the logged conservative MAE is -dE/dr of the exported model against the force labels
    import json

    from ase_etgnn import load_model
    from ase_etgnn.dataset import ETGNNDataset
    from ase_etgnn.graph import collate_graphs

    model = load_model(res.best_path, dtype=torch.float64)
    val = json.load(open(tmp_path / "joint" / "split.json"))["val"]
    ds = ETGNNDataset(str(conservative_data), indices=val, cutoff=TINY["cutoff"],
                      triplet_cutoff=TINY["triplet_cutoff"], properties=("forces",))
    errs = []
    for i in range(len(ds)):
        item = ds[i]
        graph, target = item["graph"], item["targets"]
        out = model(collate_graphs([graph], dtype=torch.float64), forces="conservative")
        errs.append(np.abs(out["forces"].numpy() - np.asarray(target["forces"])).ravel())
    ds.close()
    assert np.concatenate(errs).mean() == pytest.approx(best["forces_conservative"], rel=1e-6)


def test_joint_mode_settings_are_checked(conservative_data, tmp_path):
    with pytest.raises(ValueError, match="forces_conservative' needs forces_mode = 'joint'"):
        TrainConfig(data="x.h5", loss_weights={"forces_conservative": 1.0})
    with pytest.raises(ValueError, match="forces_mode must be one of"):
        TrainConfig(data="x.h5", forces_mode="both")
    with pytest.raises(ValueError, match="needs a model with both an energy and a forces head"):
        train(TrainConfig(data=str(conservative_data), output_dir=str(tmp_path / "j"), model=dict(TINY),
                          dtype="float64", epochs=1, progress=False, forces_mode="joint", heads=("energy",)))
