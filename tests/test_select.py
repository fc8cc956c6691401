"""Active-learning selection: descriptor, greedy uncertain + distinct picks, output for the DFPT driver, MD."""
import numpy as np
import pytest
from ase.io import read, write

from ase_etgnn import CommitteeCalculator
from ase_etgnn.dfpt import GenerationConfig, generate_structures
from ase_etgnn.structures import alpha_cristobalite, alpha_quartz
from ase_etgnn.select import (Candidate, SelectionConfig, descriptor_distance, explore, frame_score, main,
                              pair_distance_descriptor, register_cli, select_distinct, select_frames,
                              write_selection)

from conftest import random_rotation, small_model

KW = dict(dtype="float64", device="cpu", symmetrize=False)


def _shaken(atoms, rms, seed):
    a = atoms.copy()
    a.positions += np.random.default_rng(seed).normal(size=a.positions.shape) * rms / np.sqrt(3)
    return a


@pytest.fixture(scope="module")
def committee():
    return CommitteeCalculator([small_model(seed=0), small_model(seed=1), small_model(seed=2)], **KW)


@pytest.fixture(scope="module")
def frames():
    """Six distinct quartz frames (0.1 A RMS displacements)."""
    return [_shaken(alpha_quartz(), 0.1, s) for s in range(6)]


def test_descriptor_invariances_and_scale():
    q = _shaken(alpha_quartz(), 0.05, 0)
    d = pair_distance_descriptor(q)
    assert descriptor_distance(d, pair_distance_descriptor(q.copy())) == 0.0
    perm = q[np.random.default_rng(1).permutation(len(q))]
    rot = q.copy()
    rot.set_cell(q.cell.array @ random_rotation(np.random.default_rng(2)).T, scale_atoms=True)
    rot.translate([0.3, -1.2, 2.0])
    for other in (perm, rot, q.repeat((2, 1, 2))):
        assert descriptor_distance(d, pair_distance_descriptor(other)) < 1e-12
    # a uniform strain s moves every neighbour distance by the factor 1 + s: W2 = s * RMS distance
    strained = q.copy()
    strained.set_cell(q.cell * 1.01, scale_atoms=True)
    rms = np.sqrt(np.mean([np.mean(v**2) for v in d[1].values()]))
    assert descriptor_distance(d, pair_distance_descriptor(strained)) == pytest.approx(0.01 * rms, rel=1e-9)
    assert 0.005 < descriptor_distance(d, pair_distance_descriptor(_shaken(q, 0.05, 3))) < 0.1
    assert descriptor_distance(d, pair_distance_descriptor(alpha_cristobalite())) > 0.1
    sio = q.copy()
    sio.numbers[3] = 14  # another composition: always distinct
    assert descriptor_distance(d, pair_distance_descriptor(sio)) == float("inf")


def test_greedy_takes_the_highest_scores_and_skips_near_duplicates(frames):
    stds = [0.3, 0.9, 0.5, 0.1, 0.7, 0.2]
    cands = [Candidate("t.traj", k, a, s) for k, (a, s) in enumerate(zip(frames, stds))]
    cands.append(Candidate("t.traj", 6, frames[1].copy(), 0.8))  # a repeat of the best frame
    cands.append(Candidate("t.traj", 7, _shaken(frames[4], 0.002, 9), 0.75))  # almost frame 4
    picked = select_distinct(cands, n=3, min_distance=0.02)
    assert [c.frame for c in picked] == [1, 7, 2]  # 6 repeats 1; 4 is within 0.02 A of 7, which scores higher
    assert [c.frame for c in select_distinct(cands, n=10, min_distance=0.02, min_std=0.4)] == [1, 7, 2]
    assert [c.frame for c in select_distinct(cands, n=4, min_distance=0.0)] == [1, 6, 7, 4]
    # an already labelled structure is avoided as if it had been selected
    assert [c.frame for c in select_distinct(cands, n=2, min_distance=0.02, exclude=[frames[1]])] == [7, 2]
    with pytest.raises(ValueError, match="score"):
        SelectionConfig(n=1, score="stress")


def test_select_frames_scores_with_the_committee_and_gives_each_structure_once(tmp_path, committee, frames):
    """A trajectory holding every structure twice: each is selected once, the most uncertain first."""
    traj = tmp_path / "md.extxyz"
    write(traj, [a for a in frames for _ in range(2)], format="extxyz")
    scores = [frame_score(committee, a, "forces") for a in frames]
    assert len(set(np.round(scores, 12))) == len(frames)
    picked = select_frames([str(traj)], committee, SelectionConfig(n=len(frames) + 2))
    assert len(picked) == len(frames)  # duplicates skipped, nothing else to take
    assert [c.frame for c in picked] == [2 * k for k in np.argsort(scores)[::-1]]
    # the trajectory file holds positions to 1e-8 A
    assert [c.std for c in picked] == pytest.approx(sorted(scores, reverse=True), rel=1e-6)
    best = np.max(committee.get_property("forces_std", frames[int(np.argmax(scores))]))
    assert picked[0].std == pytest.approx(best, rel=1e-6)
    bec = select_frames([str(traj)], committee, SelectionConfig(n=2, score="born_effective_charges", stride=2))
    assert [c.frame % 2 for c in bec] == [0, 0] and bec[0].std >= bec[1].std


def test_selection_is_labelled_once_and_unchanged_by_the_dfpt_driver(tmp_path, frames):
    picked = [Candidate(f"md{k}.traj", 10 * k, a, 1.0 - 0.1 * k) for k, a in enumerate(frames[:4])]
    for a in frames[:4]:
        a.info["junk"] = 1  # frames' own info and arrays do not travel
    output = write_selection(picked, tmp_path / "al" / "selected.extxyz", "forces")
    back = read(output, index=":")
    assert len(back) == 4
    for k, (a, b) in enumerate(zip(frames, back)):
        assert np.allclose(a.positions, b.positions, atol=1e-7) and np.allclose(a.cell, b.cell)
        assert b.info["select_source"] == f"md{k}.traj" and b.info["select_frame"] == 10 * k
        assert b.info["select_rank"] == k and b.info["select_score"] == "forces"
        assert b.info["select_std"] == pytest.approx(1.0 - 0.1 * k) and "junk" not in b.info
        assert b.calc is None or not b.calc.results
    with pytest.raises(FileExistsError):
        write_selection(picked, output, "forces")
    # the command printed by `etgnn select`: structure i gets frame i % K with no strain and no displacement
    config = GenerationConfig(seeds=(str(output),), n_structures=len(back), rms_range=(0.0, 0.0),
                              strain_max=0.0, tag="al-1")
    generated = generate_structures(config)
    assert [info["seed_file"] for _, _, _, info in generated] == [f"{output}@{k}" for k in range(len(back))]
    for (key, index, atoms, info), ref, frame in zip(generated, back, frames):
        assert np.allclose(atoms.positions, frame.positions, atol=1e-7)  # the selected frame, not another one
        assert key == f"al-1-0-{index}"
        assert np.array_equal(atoms.positions, ref.positions) and np.array_equal(atoms.cell.array, ref.cell.array)
        assert np.array_equal(atoms.numbers, ref.numbers) and atoms.pbc.all()
        assert info["rms"] == 0.0 and not np.any(info["strain"])


def test_cli_select_and_explore(tmp_path, capsys, frames):
    import argparse

    from ase_etgnn import save_model

    models = [str(save_model(small_model(seed=s), tmp_path / f"c{s}.pt")) for s in (0, 1)]
    traj = tmp_path / "md.extxyz"
    write(traj, frames + frames[:2], format="extxyz")
    out = tmp_path / "sel.extxyz"
    assert main(["select", str(traj), "--models", *models, "--n", "7", "--output", str(out), "--device", "cpu",
                 "--dtype", "float64", "--exclude", str(tmp_path / "labelled.extxyz")]) == 2  # missing file
    write(tmp_path / "labelled.extxyz", frames[0])
    assert main(["select", str(traj), "--models", *models, "--n", "7", "--output", str(out), "--device", "cpu",
                 "--dtype", "float64", "--exclude", str(tmp_path / "labelled.extxyz")]) == 0
    printed = capsys.readouterr().out
    sel = read(out, index=":")
    assert len(sel) == 5  # 8 frames: 2 repeats and 1 labelled structure left out
    assert f"--seeds {out} --n-structures 5 --rms 0 0 --strain-max 0" in printed
    none = tmp_path / "none.extxyz"
    assert main(["select", str(traj), "--models", *models, "--n", "3", "--output", str(none), "--device", "cpu",
                 "--min-std", "1e9"]) == 1  # converged: no frame this uncertain
    assert not none.exists() and "nothing written" in capsys.readouterr().out
    parser = argparse.ArgumentParser(prog="etgnn")
    register_cli(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["select", "t.traj", "--models", "a.pt", "b.pt", "--n", "3"]).min_distance == 0.02
    seed = tmp_path / "quartz.extxyz"
    write(seed, alpha_quartz())
    assert main(["explore", str(seed), "--model", models[0], "--directory", str(tmp_path / "cli-md"), "--steps", "2",
                 "--interval", "1", "--temperatures", "600", "--strains", "0.01", "--device", "cpu"]) == 0
    assert len(read(tmp_path / "cli-md" / "quartz_T600K_+0.010.traj", index=":")) == 3
    # the model's own MD at two strains: frames every 2 steps, cells strained isotropically
    paths = explore(alpha_quartz(), CommitteeCalculator([small_model(), small_model()], **KW).members[0],
                    tmp_path / "md", temperatures=(300.0,), strains=(-0.03, 0.03), steps=4, interval=2)
    assert [p.name for p in paths] == ["md_T300K_-0.030.traj", "md_T300K_+0.030.traj"]
    for p, s in zip(paths, (-0.03, 0.03)):
        images = read(p, index=":")
        assert len(images) == 3 and np.allclose(images[-1].cell, alpha_quartz().cell * (1 + s))
        assert not np.allclose(images[0].positions, images[-1].positions)
