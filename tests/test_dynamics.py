"""Multiple time stepping (r-RESPA with direct inner forces): exactness, conservation, ASE MD plumbing."""
import numpy as np
import pytest
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet

from ase_etgnn import ETGNNCalculator
from ase_etgnn.dynamics import MultipleTimeStepVerlet

from conftest import DATA, small_model

HEADS = ("energy", "forces", "born_effective_charges", "dielectric_tensor")


@pytest.fixture(scope="module")
def model():
    return small_model(heads=HEADS, zero_net_force=True)


def _start(model, forces=None):
    atoms = read(DATA.parent.parent / "data" / "seeds" / "alpha_quartz.extxyz")
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    p = rng.normal(scale=1.0, size=(len(atoms), 3)) * np.sqrt(atoms.get_masses()[:, None] * units.kB * 300)
    atoms.set_momenta(p - p.mean(0))
    atoms.calc = ETGNNCalculator(model, dtype="float64", symmetrize=False, forces=forces)
    return atoms


def _energies(atoms, dyn, steps):
    e = []
    dyn.attach(lambda: e.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=1)
    dyn.run(steps)
    return np.array(e)


def test_one_inner_step_is_conservative_velocity_verlet(model):
    """n_inner = 1: half slow kick + direct Verlet step + half slow kick == Verlet with -dE/dr."""
    a = _start(model)
    b = _start(model, forces="conservative")
    MultipleTimeStepVerlet(a, 0.5 * units.fs, n_inner=1).run(15)
    VelocityVerlet(b, 0.5 * units.fs).run(15)
    assert np.abs(a.positions - b.positions).max() < 1e-10
    assert np.abs(a.get_momenta() - b.get_momenta()).max() < 1e-10


def test_mts_conserves_the_energy_that_direct_forces_do_not(model):
    steps = 120
    direct = _start(model)
    e_direct = _energies(direct, VelocityVerlet(direct, 0.5 * units.fs), steps)
    mts = _start(model)
    e_mts = _energies(mts, MultipleTimeStepVerlet(mts, 0.5 * units.fs, n_inner=4), steps)
    cons = _start(model, forces="conservative")
    e_cons = _energies(cons, VelocityVerlet(cons, 0.5 * units.fs), steps)
    spread = {k: np.ptp(e) for k, e in (("direct", e_direct), ("mts", e_mts), ("cons", e_cons))}
    assert spread["direct"] > 20 * spread["mts"], spread  # direct forces do no work against E: no conservation
    assert spread["mts"] < 5e-3 * len(mts), spread  # < 5 meV/atom over 60 fs
    # total momentum: zero_net_force direct forces and translation-invariant -dE/dr both sum to zero
    assert np.abs(mts.get_momenta().sum(0)).max() < 1e-10


def test_mts_with_mdlogger_trajectory_and_tensor_recording(model, tmp_path):
    from ase_etgnn.spectra import DielectricRecorder

    atoms = _start(model)
    triplet_passes = []
    hook = atoms.calc.model.triplet_embedding.register_forward_hook(lambda *a: triplet_passes.append(1))
    dyn = MultipleTimeStepVerlet(atoms, 0.5 * units.fs, n_inner=3, trajectory=str(tmp_path / "md.traj"),
                                 logfile=str(tmp_path / "md.log"), loginterval=2)
    with DielectricRecorder(atoms, trajectory=tmp_path / "tensors.traj").attach(dyn, interval=4) as rec:
        dyn.run(12)
    hook.remove()
    frames = read(tmp_path / "md.traj", ":")
    assert len(frames) == 7  # steps 0, 2, ..., 12
    log = [line.split() for line in open(tmp_path / "md.log").read().splitlines()[1:]]
    assert len(log) == 7
    # MDLogger's Etot of the last line is the energy head plus kinetic energy of the final state
    assert abs(float(log[-1][1]) - (atoms.get_potential_energy() + atoms.get_kinetic_energy())) < 1e-3
    assert np.allclose(frames[-1].positions, atoms.positions)
    record = rec.to_record()
    assert len(record) == 4 and len(triplet_passes) == 4  # tensors only on the recorded steps
    fresh = ETGNNCalculator(model, dtype="float64", symmetrize=False)
    last = atoms.copy()
    z = fresh.get_property("born_effective_charges", last)
    assert np.abs(record.born[-1] - z).max() < 1e-10


def test_mts_refuses_a_calculator_without_conservative_forces(model):
    atoms = _start(model)
    atoms.calc = ETGNNCalculator(small_model(heads=("forces",)), dtype="float64")
    with pytest.raises(ValueError, match="forces_conservative"):
        MultipleTimeStepVerlet(atoms, 0.5 * units.fs)
    with pytest.raises(ValueError, match="n_inner"):
        MultipleTimeStepVerlet(_start(model), 0.5 * units.fs, n_inner=0)
