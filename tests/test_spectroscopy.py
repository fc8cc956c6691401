"""Tests of ase_etgnn.spectra against independent numbers (ASE's Infrared / PlaczekStatic, phonopy's
BORN parser and NAC, the Lyddane-Sachs-Teller relation, a relaxed-ion finite-field response, exact
harmonic MD) using an exactly harmonic toy calculator defined here (not the neural network)."""
from __future__ import annotations

import json
import math
from typing import Dict, Tuple

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.neighborlist import neighbor_list
from scipy import constants as sc

from ase_etgnn.spectra import (
    DielectricPolarizability,
    DielectricRecorder,
    acf_spectrum,
    atoms_to_phonopy,
    autocorrelation,
    degenerate_groups,
    dipole_derivative,
    frequencies_at_gamma,
    gamma_modes,
    gamma_spectroscopy,
    ionic_dielectric_tensor,
    ir_dielectric_function,
    ir_intensities,
    ir_spectrum_from_md,
    lyddane_sachs_teller,
    make_phonopy,
    mode_effective_charges,
    nac_params,
    phonopy_to_atoms,
    quantum_correction_factor,
    raman_activities,
    raman_spectra_from_md,
    raman_tensors,
    read_born_file,
    read_md_record,
    static_dielectric_tensor,
    write_born_file,
    write_md_record,
)
from ase_etgnn.spectra import units as U
from ase_etgnn.spectra.recording import MDRecord

trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


# ---------------------------------------------------------------------------------------------
# toy calculator: exactly harmonic bond springs, fixed Born charges, eps linear in bond stretches
# ---------------------------------------------------------------------------------------------
class ToyPolar(Calculator):
    """Harmonic bond model valid for any supercell of ``reference``.

    Bonds are the neighbour pairs of ``reference`` within ``cutoff``; in a configuration each bond
    vector D is matched to the nearest reference vector D0 of the same species pair (within 0.5 A),
    ``E = 1/2 sum_bonds d^T K d`` with ``d = D - D0`` and ``K = kc n n^T + kt (1 - n n^T)``.
    Born charges are fixed per species (``Z[a,i,j] = dF_j/dE_i``); the dipole is
    ``mu_i = sum_a Z_a[i,b] (r_a - r_a^ref)_b`` (same cell only), so dmu/du = Z.  The dielectric
    tensor is ``eps0 + 1/N sum_bonds (n.d) (ra 1 + rb n n^T)``: intensive, translation invariant.
    """

    implemented_properties = ["energy", "forces", "born_effective_charges", "dielectric_tensor",
                              "dipole"]

    def __init__(self, reference: Atoms, cutoff: float, *, kc: float = 6.0, kt: float = 1.5,
                 charges: Dict[str, np.ndarray], eps0: np.ndarray, ra: float = 0.3, rb: float = 0.8,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.reference = reference.copy()
        self.cutoff = cutoff
        self.kc, self.kt = kc, kt
        self.charges = {k: np.asarray(v, float) for k, v in charges.items()}
        self.eps0 = np.asarray(eps0, float)
        self.ra, self.rb = ra, rb
        i, j, d = neighbor_list("ijD", reference, cutoff)
        z = reference.numbers
        self.ref_vectors: Dict[Tuple[int, int], np.ndarray] = {}
        for zi, zj in set(zip(z[i], z[j])):
            sel = (z[i] == zi) & (z[j] == zj)
            self.ref_vectors[(zi, zj)] = np.unique(np.round(d[sel], 8), axis=0)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        n = len(atoms)
        # bonds keep their identity while stretched: search beyond the cutoff and keep the pairs
        # whose vector is within 0.5 A of a reference bond vector of the same species pair
        i, j, d = neighbor_list("ijD", atoms, self.cutoff + 1.0)
        z = atoms.numbers
        d0 = np.full_like(d, np.nan)
        for (zi, zj), refs in self.ref_vectors.items():
            sel = np.nonzero((z[i] == zi) & (z[j] == zj))[0]
            if len(sel):
                dist = np.linalg.norm(d[sel][:, None, :] - refs[None], axis=2)
                near = np.argmin(dist, axis=1)
                ok = dist[np.arange(len(sel)), near] < 0.5
                d0[sel[ok]] = refs[near[ok]]
        keep = ~np.isnan(d0[:, 0])
        i, j, d, d0 = i[keep], j[keep], d[keep], d0[keep]
        nvec = d0 / np.linalg.norm(d0, axis=1)[:, None]
        dd = d - d0
        nd = np.einsum("pi,pi->p", nvec, dd)
        kd = self.kt * dd + (self.kc - self.kt) * nd[:, None] * nvec
        forces = np.zeros((n, 3))
        np.add.at(forces, i, kd)
        energy = 0.25 * np.einsum("pi,pi->", dd, kd)
        eps = self.eps0 + 0.5 / n * (self.ra * nd.sum() * np.eye(3)
                                     + self.rb * np.einsum("p,pi,pj->ij", nd, nvec, nvec))
        born = np.array([self.charges[s] for s in atoms.get_chemical_symbols()])
        self.results = {"energy": energy, "forces": forces, "born_effective_charges": born,
                        "dielectric_tensor": eps}
        if n == len(self.reference):
            u = atoms.get_positions() - self.reference.get_positions()
            self.results["dipole"] = np.einsum("aib,ab->i", born, u)


def cscl(a: float = 3.0) -> Tuple[Atoms, ToyPolar]:
    """Cubic CsCl-type diatomic (Pm-3m), nearest-neighbour springs, isotropic Z = +-1.3."""
    atoms = Atoms("NaCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * a, pbc=True)
    z = 1.3 * np.eye(3)
    calc = ToyPolar(atoms, cutoff=2.8, charges={"Na": z, "Cl": -z}, eps0=2.5 * np.eye(3))
    return atoms, calc


def lowsym() -> Tuple[Atoms, ToyPolar]:
    """Triclinic-like 3-atom polar crystal (P1), non-symmetric Born charges summing to zero."""
    cell = np.array([[3.3, 0.0, 0.0], [0.4, 3.6, 0.0], [0.3, -0.2, 3.9]])
    atoms = Atoms("MgOF", cell=cell, pbc=True,
                  scaled_positions=[[0.0, 0.0, 0.0], [0.45, 0.52, 0.41], [0.71, 0.18, 0.63]])
    z_mg = np.array([[2.0, 0.3, -0.1], [0.1, 1.8, 0.2], [-0.2, 0.05, 2.2]])
    z_o = np.array([[-1.2, 0.2, 0.1], [-0.3, -1.0, 0.0], [0.1, 0.15, -1.3]])
    calc = ToyPolar(atoms, cutoff=3.15, charges={"Mg": z_mg, "O": z_o, "F": -z_mg - z_o},
                    eps0=np.array([[2.2, 0.1, 0.0], [0.1, 2.4, 0.05], [0.0, 0.05, 2.6]]))
    return atoms, calc


@pytest.fixture(scope="module")
def lowsym_phonon():
    atoms, calc = lowsym()
    phonon = make_phonopy(atoms, calc, supercell_matrix=[1, 1, 1], nac=True)
    return atoms, calc, phonon


@pytest.fixture(scope="module")
def cscl_phonon():
    atoms, calc = cscl()
    phonon = make_phonopy(atoms, calc, supercell_matrix=[2, 2, 2], nac=True)
    return atoms, calc, phonon


# ---------------------------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------------------------
def test_unit_conversions_from_definitions():
    # sqrt(eV/(A^2 amu)) in cm^-1 via ase.units (ASE time unit = A sqrt(amu/eV))
    omega_per_s = units.second  # 1 / (ASE time unit) in s^-1
    assert U.OMEGA2_TO_CM1 == pytest.approx(omega_per_s / (2 * np.pi * units._c * 100), rel=1e-6)
    # and the ASE Vibrations conversion: hnu[eV] = hbar sqrt(lambda) -> cm^-1
    s = units._hbar * 1e10 / math.sqrt(units._e * units._amu)
    assert U.OMEGA2_TO_CM1 == pytest.approx(s / units.invcm, rel=1e-6)
    assert U.THZ_TO_CM1 == pytest.approx(1e12 / (sc.c * 100))
    assert U.COULOMB_EV_A == pytest.approx(units.Hartree * units.Bohr, rel=1e-6)
    assert U.PHONOPY_NAC_FACTOR == pytest.approx(U.COULOMB_EV_A, rel=1e-6)
    assert U.E_ANGSTROM_IN_DEBYE == pytest.approx(1.0 / units.Debye, rel=1e-6)
    # Porezag & Pederson's 42.255 km/mol per (D/A)^2/amu, and the e^2/amu factor
    assert U.D2_A2_AMU_TO_KM_MOL == pytest.approx(42.255, abs=2e-3)
    assert U.E2_AMU_TO_KM_MOL == pytest.approx(U.D2_A2_AMU_TO_KM_MOL * U.E2_AMU_TO_D2_A2_AMU, rel=1e-10)
    assert U.CM1_TO_EV == pytest.approx(units.invcm, rel=1e-6)
    assert U.PER_FS_TO_CM1 == pytest.approx(1.0 / (sc.c * 100 * 1e-15))


def test_degenerate_groups():
    assert degenerate_groups([0.0, 0.001, 5.0, 5.004, 9.0], 0.01) == [[0, 1], [2, 3], [4]]


def test_quantum_correction_factors():
    nu = np.array([0.0, 100.0, 1000.0])
    x = nu * U.CM1_TO_EV / (U.KB_EV * 300.0)
    assert np.allclose(quantum_correction_factor(nu, 300.0, "none"), 1.0)
    h = quantum_correction_factor(nu, 300.0, "harmonic")
    assert h[0] == pytest.approx(1.0)
    assert h[1:] == pytest.approx(x[1:] / (1 - np.exp(-x[1:])))
    assert quantum_correction_factor(nu, 300.0, "standard") == pytest.approx(np.exp(x / 2))
    with pytest.raises(ValueError):
        quantum_correction_factor(nu, 300.0, "bogus")


# ---------------------------------------------------------------------------------------------
# phonopy, NAC, BORN
# ---------------------------------------------------------------------------------------------
def test_make_phonopy_does_not_modify_atoms_and_gives_phonopy_frequencies(lowsym_phonon):
    atoms, calc, phonon = lowsym_phonon
    ref, _ = lowsym()
    assert np.allclose(atoms.get_positions(), ref.get_positions()) and atoms.calc is None
    modes = gamma_modes(phonon)
    f_thz = phonon.run_qpoints([[0, 0, 0]]).frequencies[0]
    assert modes.frequencies_cm1 == pytest.approx(f_thz * U.THZ_TO_CM1, rel=1e-6, abs=1e-4)
    assert modes.acoustic.sum() == 3 and np.all(np.abs(modes.frequencies_cm1[modes.acoustic]) < 1e-3)
    assert np.all(modes.frequencies_cm1[modes.optical] > 50)


def test_frequencies_match_ase_vibrations_and_ir_matches_ase_infrared(lowsym_phonon, tmp_path):
    from ase.vibrations import Infrared

    atoms, calc, phonon = lowsym_phonon
    modes = gamma_modes(phonon)
    born = phonon.nac_params["born"]
    work = atoms.copy()
    work.calc = calc
    ir = Infrared(work, name=str(tmp_path / "ir"), delta=0.01)
    ir.run()
    ir.read()
    f_ase = np.real(ir.get_frequencies())
    ours_d2 = ir_intensities(modes, born, "(D/A)^2/amu")
    opt = modes.optical
    assert np.sort(f_ase)[3:] == pytest.approx(modes.frequencies_cm1[opt], rel=1e-6)
    order = np.argsort(np.real(ir.hnu))
    assert ir.intensities[order][3:] == pytest.approx(ours_d2[opt], rel=1e-6, abs=1e-8)
    km = ir_intensities(modes, born, "km/mol")
    assert km == pytest.approx(ours_d2 * U.D2_A2_AMU_TO_KM_MOL)
    # mode charges are the dipole derivatives: index order matters for a non-symmetric Z
    zt = mode_effective_charges(modes, born)
    zt_wrong = np.einsum("abi,sab->si", born, modes.displacement_patterns())
    assert not np.allclose(np.sum(zt_wrong**2, 1)[opt], np.sum(zt**2, 1)[opt], rtol=1e-3)


def test_nac_params_asr_and_order(lowsym_phonon):
    atoms, calc, phonon = lowsym_phonon
    nac = nac_params(atoms, calc)
    assert set(nac) == {"born", "dielectric", "factor"}
    assert nac["factor"] == pytest.approx(14.399652)
    assert np.abs(nac["born"].sum(axis=0)).max() < 1e-10
    raw = calc.get_property("born_effective_charges", atoms.copy())
    # the toy's charges already sum to zero and P1 has no symmetry: values and order preserved
    assert nac["born"] == pytest.approx(raw, abs=1e-10)
    assert nac["dielectric"] == pytest.approx(calc.eps0, abs=1e-10)


def test_nac_params_symmetrised_for_cubic():
    atoms, calc = cscl()
    bad = ToyPolar(atoms, cutoff=2.8, charges={"Na": 1.3 * np.eye(3) + 0.05, "Cl": -1.2 * np.eye(3)},
                   eps0=np.diag([2.4, 2.5, 2.6]))
    nac = nac_params(atoms, bad)
    assert np.abs(nac["born"].sum(axis=0)).max() < 1e-10
    for z in nac["born"]:
        assert z == pytest.approx(np.trace(z) / 3 * np.eye(3), abs=1e-8)
    assert nac["dielectric"] == pytest.approx(2.5 * np.eye(3), abs=1e-8)


def test_nac_params_symmetrised_as_phonopy_does():
    """nac_params' projection equals phonopy's symmetrize_borns_and_epsilon (then the sum rule)."""
    from phonopy.structure.symmetry import symmetrize_borns_and_epsilon

    from ase_etgnn.conventions import apply_sum_rule

    atoms, _ = cscl()
    bad = ToyPolar(atoms, cutoff=2.8, charges={"Na": 1.3 * np.eye(3) + 0.05, "Cl": -1.2 * np.eye(3)},
                   eps0=np.diag([2.4, 2.5, 2.6]))
    ours = nac_params(atoms, bad)
    eps = np.asarray(bad.get_property("dielectric_tensor", atoms))
    born, eps = symmetrize_borns_and_epsilon(np.asarray(bad.get_property("born_effective_charges", atoms)),
                                             0.5 * (eps + eps.T), atoms_to_phonopy(atoms), symprec=1e-5)
    assert apply_sum_rule(born) == pytest.approx(ours["born"], abs=1e-8)
    assert eps == pytest.approx(ours["dielectric"], abs=1e-8)


def quartz_toy() -> Tuple[Atoms, ToyPolar]:
    from ase.spacegroup import crystal

    atoms = crystal(["Si", "O"], basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)],
                    spacegroup=154, cellpar=[4.916, 4.916, 5.405, 90, 90, 120])
    rng = np.random.default_rng(3)
    z_si = 3.0 * np.eye(3) + 0.3 * rng.normal(size=(3, 3))
    z_o = -0.5 * z_si + 0.2 * rng.normal(size=(3, 3))
    calc = ToyPolar(atoms, cutoff=1.8, kc=25.0, kt=4.0, charges={"Si": z_si, "O": z_o},
                    eps0=2.4 * np.eye(3) + 0.1 * np.diag([1, 1, 2]))
    return atoms, calc


def test_born_file_roundtrip_quartz_independent_atoms(tmp_path):
    """Symmetrised quartz charges: only the 2 independent atoms are written and phonopy's parser
    regenerates the 9 site-rotated tensors, equal to ours (consistent rotation conventions)."""
    atoms, calc = quartz_toy()
    nac = nac_params(atoms, calc)
    assert np.abs(nac["born"].sum(axis=0)).max() < 1e-10
    path = write_born_file(tmp_path / "BORN", nac, primitive=atoms)
    assert len(path.read_text().split("\n")) == 2 + 2 + 1
    back = read_born_file(path, atoms)
    assert back["born"] == pytest.approx(nac["born"], abs=1e-8)
    assert back["dielectric"] == pytest.approx(nac["dielectric"], abs=1e-8)


def test_born_file_roundtrip(tmp_path, lowsym_phonon, cscl_phonon):
    # P1: every atom written; cubic: only independent atoms, expanded by phonopy's parser
    for atoms, _, phonon in (lowsym_phonon, cscl_phonon):
        nac = phonon.nac_params
        prim = phonopy_to_atoms(phonon.primitive)
        path = write_born_file(tmp_path / "BORN", nac, primitive=prim)
        back = read_born_file(path, prim)
        assert back["born"] == pytest.approx(nac["born"], abs=1e-9)
        assert back["dielectric"] == pytest.approx(nac["dielectric"], abs=1e-9)
        assert back["factor"] == pytest.approx(nac["factor"])
    # without symmetry information every atom is written and read back
    path = write_born_file(tmp_path / "BORN_all", lowsym_phonon[2].nac_params)
    back = read_born_file(path, lowsym_phonon[0], is_symmetry=False)
    assert back["born"] == pytest.approx(lowsym_phonon[2].nac_params["born"], abs=1e-9)


def test_lo_to_index_convention_against_long_wavelength_model(lowsym_phonon):
    """LO frequencies from phonopy's NAC equal those of an independent model in our convention:
    field E = -4 pi q (q.P)/(q.eps.q), P_i = sum Z[a,i,b] u_ab / Omega, force F_ab = sum_i Z[a,i,b] E_i."""
    atoms, calc, phonon = lowsym_phonon
    modes = gamma_modes(phonon)
    born, eps = phonon.nac_params["born"], phonon.nac_params["dielectric"]
    n = len(atoms)
    dmat = np.einsum("sai,s,sbj->aibj", modes.eigenvectors, modes.eigenvalues, modes.eigenvectors)
    dmat = dmat.reshape(3 * n, 3 * n)
    m = np.repeat(modes.masses, 3)
    for q in ([1.0, 0.0, 0.0], [0.2, -0.5, 0.8]):
        q = np.asarray(q) / np.linalg.norm(q)
        qz = np.einsum("i,aib->ab", q, born).ravel()  # (q.Z)_b, first index = field
        na = 4 * np.pi * U.COULOMB_EV_A / modes.volume * np.outer(qz, qz) / (q @ eps @ q)
        lam = np.linalg.eigvalsh(dmat + na / np.sqrt(np.outer(m, m)))
        expected = U.frequency_cm1_from_eigenvalue(lam)
        got = frequencies_at_gamma(phonon, q)
        assert np.sort(got)[3:] == pytest.approx(np.sort(expected)[3:], rel=1e-5)
        # the transposed convention gives different LO frequencies for this non-symmetric Z
        qz_t = np.einsum("i,abi->ab", q, born).ravel()
        na_t = 4 * np.pi * U.COULOMB_EV_A / modes.volume * np.outer(qz_t, qz_t) / (q @ eps @ q)
        wrong = U.frequency_cm1_from_eigenvalue(np.linalg.eigvalsh(dmat + na_t / np.sqrt(np.outer(m, m))))
        assert not np.allclose(np.sort(wrong)[3:], np.sort(got)[3:], rtol=1e-3)
    # without a direction: TO modes only
    assert frequencies_at_gamma(phonon) == pytest.approx(modes.frequencies_cm1, rel=1e-6, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# dielectric response
# ---------------------------------------------------------------------------------------------
def test_lst_cubic_diatomic(cscl_phonon):
    atoms, calc, phonon = cscl_phonon
    modes = gamma_modes(phonon)
    born, eps_inf = phonon.nac_params["born"], phonon.nac_params["dielectric"]
    eps0 = static_dielectric_tensor(modes, born, eps_inf)
    assert eps0 == pytest.approx(eps0[0, 0] * np.eye(3), abs=1e-8)
    assert eps0[0, 0] > eps_inf[0, 0] + 0.2
    to = modes.frequencies_cm1[modes.optical]
    assert to == pytest.approx(np.full(3, to[0]), rel=1e-8)
    lo = np.sort(frequencies_at_gamma(phonon, [0, 0, 1]))[3:]
    # one LO (highest) and two TO: omega_LO^2 / omega_TO^2 = eps0 / eps_inf
    assert lo[:2] == pytest.approx(to[:2], rel=1e-6)
    assert (lo[2] / to[0]) ** 2 == pytest.approx(eps0[0, 0] / eps_inf[0, 0], rel=1e-5)
    # analytic: omega_LO^2 - omega_TO^2 = 4 pi e^2 Z^2 / (Omega eps_inf mu)
    mu = 1.0 / (1.0 / modes.masses[0] + 1.0 / modes.masses[1])
    d_lam = 4 * np.pi * U.COULOMB_EV_A * 1.3**2 / (modes.volume * 2.5 * mu)
    assert (lo[2] / U.OMEGA2_TO_CM1) ** 2 - (to[0] / U.OMEGA2_TO_CM1) ** 2 == pytest.approx(d_lam, rel=1e-5)
    check = lyddane_sachs_teller(phonon, modes, born, eps_inf, [1, 1, 0])
    assert check.relative_error < 1e-5


def test_generalised_lst_low_symmetry(lowsym_phonon):
    atoms, calc, phonon = lowsym_phonon
    modes = gamma_modes(phonon)
    born, eps_inf = phonon.nac_params["born"], phonon.nac_params["dielectric"]
    for q in ([1, 0, 0], [0, 1, 1], [0.3, -0.7, 0.2]):
        assert lyddane_sachs_teller(phonon, modes, born, eps_inf, q).relative_error < 1e-5


def test_ionic_dielectric_equals_relaxed_ion_field_response(lowsym_phonon):
    """eps0 - eps_inf = 4 pi dP/dE from relaxing the ions in a field with the Gamma force constants."""
    atoms, calc, phonon = lowsym_phonon
    modes = gamma_modes(phonon)
    born = phonon.nac_params["born"]
    n = len(atoms)
    m = np.repeat(modes.masses, 3)
    d = np.einsum("sai,s,sbj->aibj", modes.eigenvectors, modes.eigenvalues,
                  modes.eigenvectors).reshape(3 * n, 3 * n)
    phi = d * np.sqrt(np.outer(m, m))  # eV/A^2, Gamma force constants
    dpde = np.zeros((3, 3))
    for i in range(3):  # field 1 V/A along i: F_ab = Z[a,i,b] (eV/A)
        f = born[:, i, :].ravel()
        u = np.linalg.lstsq(phi, f, rcond=1e-10)[0].reshape(n, 3)
        dpde[:, i] = np.einsum("ajb,ab->j", born, u) / modes.volume  # e/A^2 per V/A
    chi = dpde * sc.e / (sc.epsilon_0 * 1e-10)  # SI susceptibility = eps0 - eps_inf
    assert ionic_dielectric_tensor(modes, born) == pytest.approx(chi, rel=1e-6, abs=1e-9)
    eps_w = ir_dielectric_function([0.0, 1e5], modes, born, phonon.nac_params["dielectric"], 5.0)
    assert eps_w[0].real == pytest.approx(static_dielectric_tensor(modes, born, phonon.nac_params["dielectric"]))
    assert eps_w[1].real == pytest.approx(phonon.nac_params["dielectric"], abs=1e-3)
    w = modes.frequencies_cm1[modes.optical][0]
    assert np.trace(ir_dielectric_function([w], modes, born, phonon.nac_params["dielectric"], 5.0)[0].imag) > 0


# ---------------------------------------------------------------------------------------------
# Raman
# ---------------------------------------------------------------------------------------------
def test_raman_matches_ase_placzek_static(lowsym_phonon, tmp_path):
    from ase.vibrations.placzek import PlaczekStatic
    from ase.vibrations.raman import StaticRamanCalculator

    atoms, calc, phonon = lowsym_phonon
    modes = gamma_modes(phonon)
    rt = raman_tensors(modes, calc)
    ours = raman_activities(rt.tensors)
    assert np.all(ours[modes.optical] > 1e-6) and np.all(ours[modes.acoustic] == 0)
    work = atoms.copy()
    work.calc = calc
    name = str(tmp_path / "raman")
    rm = StaticRamanCalculator(work, DielectricPolarizability, exkwargs={"calc": calc}, name=name,
                               delta=0.01, txt=None)
    rm.run()
    pz = PlaczekStatic(work, name=name, txt=None)
    e_ase = pz.get_energies()
    act_ase = pz.get_absolute_intensities()[np.argsort(e_ase)]
    assert act_ase[3:] == pytest.approx(ours[modes.optical], rel=1e-5)


def test_raman_inactive_in_centrosymmetric_cscl(cscl_phonon):
    atoms, calc, phonon = cscl_phonon
    res = gamma_spectroscopy(phonon, calc)
    assert np.all(res.raman.activities < 1e-12)
    assert np.all(res.ir_km_mol[res.modes.optical] > 1.0)
    table = res.table()
    json.dumps(table)
    assert len(table) == 6 and sum(r["acoustic"] for r in table) == 3
    # T1u irrep of m-3m (Pm-3m) from phonopy
    assert all(r["irrep"] == "T1u" for r in table if not r["acoustic"])


def test_quartz_selection_rules():
    """alpha-quartz (point group 32): A1 Raman only, A2 IR only, E both (4 A1 + 4 A2 + 8 E optical)."""
    atoms, calc = quartz_toy()
    phonon = make_phonopy(atoms, calc, supercell_matrix=[1, 1, 1])
    res = gamma_spectroscopy(phonon, calc)
    table = [r for r in res.table() if not r["acoustic"]]
    assert len(table) == 24
    labels = [r["irrep"] for r in table]
    assert labels.count("A1") == 4 and labels.count("A2") == 4 and labels.count("E") == 16
    ir_max = max(r["ir_intensity_km_mol"] for r in table)
    ra_max = max(r["raman_activity_A4_amu"] for r in table)
    for r in table:
        ir_on = r["ir_intensity_km_mol"] > 1e-6 * ir_max
        ra_on = r["raman_activity_A4_amu"] > 1e-6 * ra_max
        assert (ir_on, ra_on) == {"A1": (False, True), "A2": (True, False), "E": (True, True)}[r["irrep"]]
    # uniaxial crystal: eps_0 keeps the symmetry of eps_inf; LO-TO splitting only for polar modes
    assert res.eps_0[0, 0] == pytest.approx(res.eps_0[1, 1]) and abs(res.eps_0[0, 1]) < 1e-8
    lo_z = np.sort(frequencies_at_gamma(phonon, [0, 0, 1]))
    to = np.sort(res.modes.frequencies_cm1)
    assert np.any(lo_z - to > 1.0)


# ---------------------------------------------------------------------------------------------
# MD
# ---------------------------------------------------------------------------------------------
def _analytic_record(modes, born, raman, atoms, temperature: float, n_steps: int,
                     dt: float) -> MDRecord:
    """Exact classical trajectory of all optical modes, each with equipartition energy
    (<Q^2> = kT/omega^2, <Qdot^2> = kT) and a random phase; eps(t) = eps + (4 pi/V) sum_s R_s Q_s(t),
    exact for the toy, whose eps is linear in the displacements (R_s checked against ASE above)."""
    t = np.arange(n_steps) * dt  # fs
    patterns = modes.displacement_patterns()
    kt = units.kB * temperature  # eV
    rng = np.random.default_rng(0)
    pos = np.repeat(atoms.get_positions()[None], n_steps, axis=0)
    vel = np.zeros_like(pos)
    eps = np.repeat(np.eye(3)[None] * 2.5, n_steps, axis=0)
    for s in np.nonzero(modes.optical)[0]:
        w = math.sqrt(modes.eigenvalues[s]) * units.fs  # rad/fs (sqrt(eV/A^2/amu) = 1/ASE-time)
        qamp = math.sqrt(2 * kt / modes.eigenvalues[s])  # A sqrt(amu)
        ph = rng.uniform(0, 2 * np.pi)
        qt = qamp * np.cos(w * t + ph)
        qdot = -qamp * w * np.sin(w * t + ph)  # A sqrt(amu)/fs
        pos += qt[:, None, None] * patterns[s][None]
        vel += qdot[:, None, None] * patterns[s][None]
        eps += 4 * np.pi / modes.volume * qt[:, None, None] * raman[s][None]
    return MDRecord(times_fs=t, positions=pos, velocities=vel,
                    cells=np.repeat(atoms.cell[:][None], n_steps, axis=0), masses=modes.masses,
                    numbers=atoms.numbers.copy(), born=np.repeat(born[None], n_steps, axis=0),
                    dielectric=eps)


@pytest.fixture(scope="module")
def harmonic_md(lowsym_phonon):
    atoms, calc, phonon = lowsym_phonon
    modes = gamma_modes(phonon)
    rt = raman_tensors(modes, calc)
    rec = _analytic_record(modes, phonon.nac_params["born"], rt.tensors, atoms, 300.0, 16384, 2.0)
    return modes, phonon.nac_params["born"], rt, rec


def test_md_ir_sum_rule_and_peaks_harmonic(harmonic_md):
    modes, born, _, rec = harmonic_md
    temperature = 300.0
    assert rec.temperature() == pytest.approx(temperature, rel=0.02)  # 6 optical modes = 3N-3 dof
    spec = ir_spectrum_from_md(rec, temperature, quantum_correction="harmonic")
    f, a = spec.frequencies_cm1, spec["absorption"]
    opt = np.nonzero(modes.optical)[0]
    zt = mode_effective_charges(modes, born)
    for s in opt:  # peaks at the mode frequencies, integrated strength = pi |Zt|^2 / (6 eps0 c V)
        w0 = modes.frequencies_cm1[s]
        win = np.abs(f - w0) < 15
        assert f[win][np.argmax(a[win])] == pytest.approx(w0, abs=2.0)
        integral = trapezoid(a[win], f[win]) * 2 * np.pi * sc.c * 100  # d omega = 2 pi c d nu
        zt_si = np.sum(zt[s] ** 2) * sc.e**2 / sc.atomic_mass  # C^2/kg
        expected = np.pi * zt_si / (6 * sc.epsilon_0 * sc.c * modes.volume * 1e-30) / 100  # cm^-1 s^-1
        assert integral == pytest.approx(expected, rel=0.02)
    # "harmonic" == classical; "standard" larger at high frequency; "none" smaller
    none = ir_spectrum_from_md(rec, temperature, quantum_correction="none")["absorption"]
    std = ir_spectrum_from_md(rec, temperature, quantum_correction="standard")["absorption"]
    top = np.argmax(a)
    assert none[top] < a[top] < std[top]


def test_md_ir_velocity_verlet_peak_and_recorder_roundtrip(tmp_path):
    """VelocityVerlet on the toy CsCl cell: the IR peak is at the TO frequency."""
    from ase.md.verlet import VelocityVerlet

    atoms, calc = cscl()
    phonon = make_phonopy(atoms, calc, supercell_matrix=[1, 1, 1])
    modes = gamma_modes(phonon)
    w_to = modes.frequencies_cm1[modes.optical][0]
    md = atoms.copy()
    md.calc = calc
    md.positions[1] += [0.05, 0.02, -0.03]
    dyn = VelocityVerlet(md, timestep=1.0 * units.fs)
    with DielectricRecorder(md, trajectory=tmp_path / "md.traj").attach(dyn, interval=2) as rec:
        dyn.run(800)
    record = rec.to_record()
    assert record.born.shape == (len(record), 2, 3, 3) and record.timestep_fs == pytest.approx(2.0)
    spec = ir_spectrum_from_md(record, temperature=300.0)
    f = spec.frequencies_cm1
    assert f[np.argmax(spec["power"])] == pytest.approx(w_to, abs=6.0)
    # .traj keeps (N,3,3); extxyz flattens to (N,9); both read back identically
    back = read_md_record(tmp_path / "md.traj")
    assert back.born == pytest.approx(record.born) and back.velocities == pytest.approx(record.velocities)
    assert back.dielectric == pytest.approx(record.dielectric)
    write_md_record(record, tmp_path / "md.extxyz")
    assert "born_effective_charges:R:9" in (tmp_path / "md.extxyz").read_text().splitlines()[1]
    back2 = read_md_record(tmp_path / "md.extxyz")
    assert back2.born == pytest.approx(record.born, abs=1e-6)
    assert back2.times_fs == pytest.approx(record.times_fs)
    # velocities from finite differences of positions agree with the recorded ones
    nov = MDRecord(record.times_fs, record.positions, None, record.cells, record.masses, record.numbers,
                   record.born, record.dielectric)
    assert np.abs(nov.get_velocities()[1:-1] - record.velocities[1:-1]).max() < 2e-2 * np.abs(
        record.velocities).max()
    assert md.calc is calc and len(md) == 2


def test_recorder_streams_extxyz(tmp_path):
    from ase.md.verlet import VelocityVerlet

    atoms, calc = cscl()
    md = atoms.copy()
    md.calc = calc
    md.positions[0] += [0.03, 0.0, 0.01]
    dyn = VelocityVerlet(md, timestep=0.5 * units.fs)
    rec = DielectricRecorder(md, trajectory=tmp_path / "md.xyz").attach(dyn, interval=3)
    dyn.run(30)
    rec.close()
    record = rec.to_record()
    assert len(record) == 11 and record.timestep_fs == pytest.approx(1.5)
    back = read_md_record(tmp_path / "md.xyz")
    assert back.born == pytest.approx(record.born) and back.dielectric == pytest.approx(record.dielectric)
    assert back.times_fs == pytest.approx(record.times_fs)
    assert back.velocities == pytest.approx(record.velocities, abs=1e-9)


def test_dipole_derivative_convention_asr_and_com():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4, 3, 3, 3))
    v = rng.normal(size=(4, 3, 3))
    m = np.array([1.0, 2.0, 3.0])
    got = dipole_derivative(z, v, m, asr=False, remove_com=False)
    ref = np.array([[sum(z[t, a, i, b] * v[t, a, b] for a in range(3) for b in range(3)) for i in range(3)]
                    for t in range(4)])
    assert got == pytest.approx(ref)
    # a rigid translation gives no dipole change once ASR is imposed
    vt = np.repeat(rng.normal(size=(4, 1, 3)), 3, axis=1)
    assert np.abs(dipole_derivative(z, vt, m, asr=True, remove_com=False)).max() < 1e-12
    assert np.abs(dipole_derivative(z, vt, m, asr=False, remove_com=True)).max() < 1e-12


def test_autocorrelation_and_spectrum_normalisation():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 2))
    acf = autocorrelation(x, 50)
    direct = np.array([np.mean(np.sum(x[: 1000 - k] * x[k:], axis=1)) for k in range(50)])
    assert acf == pytest.approx(direct)
    f, s = acf_spectrum(acf, 0.5, window="hann", pad_factor=8)
    # int over all omega of S / (2 pi) = C0 (omega in rad/fs; positive half doubled)
    dw = (f[1] - f[0]) / U.PER_FS_TO_CM1 * 2 * np.pi
    assert (2 * s.sum() - s[0] - s[-1]) * dw / (2 * np.pi) == pytest.approx(acf[0], rel=1e-6)


def test_md_raman_peaks_iso_aniso(harmonic_md):
    modes, _, rt, rec = harmonic_md
    spec = raman_spectra_from_md(rec, quantum_correction="none")
    f = spec.frequencies_cm1
    act = raman_activities(rt.tensors)
    assert spec["unpolarized"] == pytest.approx(spec["VV"] + spec["VH"])
    for s in np.nonzero(modes.optical)[0]:
        w0 = modes.frequencies_cm1[s]
        win = np.abs(f - w0) < 15
        assert f[win][np.argmax(spec["unpolarized"][win])] == pytest.approx(w0, abs=3.0)
        # classical: int unpolarized d omega/(2 pi) over +-w0 = (45a^2+7g^2)/45 <Q^2>, <Q^2> = kT/w^2
        integral = 2 * trapezoid(spec["unpolarized"][win], f[win]) / U.PER_FS_TO_CM1  # fs^-1
        q2 = units.kB * 300.0 / modes.eigenvalues[s]  # A^2 amu
        assert integral == pytest.approx(act[s] / 45 * q2, rel=0.02)


# ---------------------------------------------------------------------------------------------
# examples (run with the toy calculator injected instead of the ETGNN model)
# ---------------------------------------------------------------------------------------------
def _load_example(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_run_with_toy_calculator(tmp_path):
    atoms, calc = quartz_toy()
    quartz = _load_example("quartz_ir_raman")
    assert quartz.alpha_quartz().get_chemical_formula() == atoms.get_chemical_formula()
    rows = quartz.main(["--out", str(tmp_path / "q"), "--supercell", "1", "1", "1"], calc=calc)
    saved = json.loads((tmp_path / "q" / "quartz_modes.json").read_text())
    assert len(saved) == 27 == len(rows)
    assert {"frequency_cm1", "ir_intensity_km_mol", "raman_activity_A4_amu", "irrep"} <= set(saved[0])
    assert (tmp_path / "q" / "quartz_ir_raman.png").stat().st_size > 0
    md = _load_example("md_ir_raman")
    ir, raman = md.main(["--out", str(tmp_path / "md"), "--steps", "60", "--equil", "5",
                         "--max-lag", "40"], calc=calc)
    assert np.all(np.isfinite(ir["absorption"])) and np.all(np.isfinite(raman["unpolarized"]))
    assert (tmp_path / "md" / "md_ir_raman.png").stat().st_size > 0
    assert len(read_md_record(tmp_path / "md" / "md.traj")) == 61



def corundum_toy() -> Tuple[Atoms, ToyPolar]:
    """The corundum seed (R-3c) with Al-O springs, random per-species charges and eps0 (symmetrised by NAC)."""
    from ase_etgnn.structures import corundum

    atoms = corundum()
    rng = np.random.default_rng(5)
    z_al = 2.9 * np.eye(3) + 0.3 * rng.normal(size=(3, 3))
    z_o = -2.0 / 3.0 * z_al + 0.2 * rng.normal(size=(3, 3))
    calc = ToyPolar(atoms, cutoff=2.0, kc=20.0, kt=4.0, charges={"Al": z_al, "O": z_o},
                    eps0=3.1 * np.eye(3) + 0.1 * rng.normal(size=(3, 3)))
    return atoms, calc


def test_sapphire_example_d3d_irreps_selection_rules_and_experiment_table(tmp_path, monkeypatch):
    """Sapphire (D3d) with a toy calculator: the 27 optical modes split into 2 A1g + 5 Eg + 3 A2g + 2 A1u +
    2 A2u + 4 Eu; only A2u/Eu absorb in the IR (LO along z for A2u, in the plane for Eu), only A1g/Eg scatter
    Raman, g modes have no LO; the experiment table pairs all 13 measured groups; eps_inf is set against the
    DFPT record of the ideal cell."""
    from ase_etgnn.records import append_record

    atoms, calc = corundum_toy()
    sapphire = _load_example("sapphire_ir_raman")
    reference = tmp_path / "ideal.h5"
    append_record(reference, atoms, {"dielectric_tensor": 3.2 * np.eye(3)}, {"tag": "ideal-corundum"}, key="k")
    monkeypatch.setattr(sapphire, "DFPT_REFERENCE", reference)
    dft = {"A1g": [640.0, 410.0], "Eg": [370.0, 430.0, 450.0, 580.0, 750.0]}  # no A2u, Eu: no DFT column there
    monkeypatch.setattr(sapphire, "FROZEN_PHONON", tmp_path / "fph.json")
    (tmp_path / "fph.json").write_text(json.dumps({"all_modes": {"DFT": dft}}))
    rows = sapphire.main(["--out", str(tmp_path / "s"), "--supercell", "1", "1", "1"], calc=calc)
    summary = json.loads((tmp_path / "s" / "sapphire_summary.json").read_text())
    groups = summary["mode_groups"]
    count = {k: sum(g["irrep"] == k for g in groups) for k in ("A1g", "Eg", "A2g", "A1u", "A2u", "Eu")}
    assert count == {"A1g": 2, "Eg": 5, "A2g": 3, "A1u": 2, "A2u": 2, "Eu": 4}
    assert sum(len(g["modes"]) for g in groups) == 27 == len(rows) - 3
    ir_max = max(g["ir_intensity_km_mol"] for g in groups)
    raman_max = max(g["raman_activity_A4_amu"] for g in groups)
    for g in groups:
        polar, raman = g["irrep"] in ("A2u", "Eu"), g["irrep"] in ("A1g", "Eg")
        assert (g["ir_intensity_km_mol"] > 1e-3 * ir_max) == polar, g
        assert (g["raman_activity_A4_amu"] > 1e-6 * raman_max) == raman, g
        assert (g["lo_q||z_cm1"] is not None) == (g["irrep"] == "A2u"), g
        assert (g["lo_q||x_cm1"] is not None) == (g["irrep"] == "Eu"), g
        assert len(g["modes"]) == (2 if g["irrep"].startswith("E") else 1)
    assert [m["irrep"] for m in summary["experiment"]] == ["A1g"] * 2 + ["Eg"] * 5 + ["A2u"] * 2 + ["Eu"] * 4
    for m in summary["experiment"]:
        assert m["difference_cm1"] == pytest.approx(m["computed_cm1"] - m["experiment_cm1"])
    with_dft = [(m["irrep"], m["dft_cm1"]) for m in summary["experiment"] if "dft_cm1" in m]
    assert with_dft == [("A1g", 410.0), ("A1g", 640.0)] + [("Eg", x) for x in dft["Eg"]]  # by rank in its irrep
    assert all(m["minus_dft_cm1"] == m["computed_cm1"] - m["dft_cm1"] for m in summary["experiment"] if "dft_cm1" in m)
    assert summary["eps_inf_minus_dfpt_max_abs"] == pytest.approx(
        np.abs(np.array(summary["eps_inf_experimental_geometry"]) - 3.2 * np.eye(3)).max())


def test_frozen_phonon_reference_from_stored_forces_equals_phonopy_on_the_calculator(tmp_path):
    """data/al2o3_frozen_phonon.py: forces stored as records (as the QE job writes them) give the Gamma TO
    frequencies that phonopy gets from the calculator itself on the 10-atom cell, in D3d's 2 A1g + 5 Eg + 3 A2g +
    2 A1u + 2 A2u + 4 Eu optical groups; a record of another structure under a frame's key is refused."""
    import sys
    from pathlib import Path

    from ase_etgnn.records import append_record

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data"))
    try:
        import al2o3_frozen_phonon as fph
    finally:
        sys.path.pop(0)
    atoms, calc = corundum_toy()
    phonon = fph.displaced_phonopy()
    frames = fph.frames(phonon)
    data = tmp_path / "fph.h5"
    for i, frame in enumerate(frames):
        frame.calc = calc
        append_record(data, frame, {"forces": frame.get_forces()}, {"tag": "corundum-fph"}, key=f"corundum-fph-0-{i}")
    fph.set_forces(phonon, fph.dft_forces(str(data), frames))
    stored = fph.by_irrep(fph.mode_table(phonon))
    direct = fph.by_irrep(fph.mode_table(make_phonopy(atoms, calc, supercell_matrix=[1, 1, 1],
                                                      displacement=fph.DISPLACEMENT, is_plusminus=True)))
    assert {k: len(v) for k, v in stored.items()} == {"A1g": 2, "Eg": 5, "A2g": 3, "A1u": 2, "A2u": 2, "Eu": 4}
    assert stored.keys() == direct.keys()
    for k in stored:
        np.testing.assert_allclose(stored[k], direct[k], rtol=0, atol=1e-6)
    moved = frames[2].copy()
    moved.positions[0] += 0.01
    other = tmp_path / "other.h5"
    for i, frame in enumerate(frames[:2] + [moved]):
        append_record(other, frame, {"forces": np.zeros((10, 3))}, {"tag": "x"}, key=f"corundum-fph-0-{i}")
    with pytest.raises(ValueError, match="corundum-fph-0-2 is not frame 2"):
        fph.dft_forces(str(other), frames)
    partial = tmp_path / "partial.h5"
    for i, frame in enumerate(frames[:3]):
        append_record(partial, frame, {"forces": np.zeros((10, 3))}, {"tag": "x"}, key=f"corundum-fph-0-{i}")
    with pytest.raises(ValueError, match=r"frames \[3, 4, 5, 6\] of 7 have no record"):
        fph.dft_forces(str(partial), frames)


def test_match_experiment_refuses_a_different_number_of_groups():
    from ase_etgnn.spectra import match_experiment

    groups = [{"irrep": "Eg", "to_cm1": 400.0, "ir_intensity_km_mol": 0.0, "raman_activity_A4_amu": 1.0}]
    assert match_experiment(groups, {"Eg": [378]})[0]["difference_cm1"] == pytest.approx(22.0)
    with pytest.raises(ValueError, match="irrep A1g: 0 computed mode groups, 2 measured values"):
        match_experiment(groups, {"A1g": [418, 645]})

# ---------------------------------------------------------------------------------------------
# LO/TO pairing and imaginary-frequency check (issue 17)
# ---------------------------------------------------------------------------------------------
def assert_interlaced(pairs) -> None:
    """LO/TO pairs in ascending TO order with TO_i <= LO_i <= TO_(i+1) (1e-6 cm^-1 slack)."""
    assert [p.to_cm1 for p in pairs] == sorted(p.to_cm1 for p in pairs)
    for p, nxt in zip(pairs, pairs[1:] + [None]):
        assert p.to_cm1 - 1e-6 <= p.lo_cm1 <= (np.inf if nxt is None else nxt.to_cm1 + 1e-6), p


def test_lo_to_pairs_quartz_interlace_within_the_irrep():
    """alpha-quartz (toy): along z only the A2 modes get an LO, along x one partner of each E pair; A1 modes
    never do.  Each LO eigenvector lies in the TO modes of its partner's irrep, each LO lies between its TO and
    the next polar TO (a rank-one update interlaces), and the pairs plus the unshifted modes reproduce phonopy's
    full set of q -> 0 frequencies."""
    from ase_etgnn.spectra import lo_to_pairs, mode_groups

    atoms, calc = quartz_toy()
    phonon = make_phonopy(atoms, calc, supercell_matrix=[1, 1, 1])
    res = gamma_spectroscopy(phonon, calc, raman=False)
    groups = [g for g in mode_groups(res.modes) if not res.modes.acoustic[g].any()]
    expected_irrep = {"q||z": "A2", "q||x": "E"}
    for name, q in (("q||z", [0, 0, 1]), ("q||x", [1, 0, 0])):
        pairs = lo_to_pairs(res, phonon, q)
        assert {p.irrep for p in pairs} == {expected_irrep[name]}
        assert len(pairs) == sum(res.modes.irreps[g[0]] == expected_irrep[name] for g in groups)  # 4 A2, 8 E
        assert all(p.irrep_weight == pytest.approx(1.0, abs=1e-8) for p in pairs)  # LO has its TO partner's symmetry
        assert_interlaced(pairs)
        paired = {p.to_indices: p.lo_cm1 for p in pairs}
        f = res.modes.frequencies_cm1
        predicted = [0.0] * 3
        for g in groups:
            lo = paired.get(tuple(g))
            predicted += [f[g[0]]] * len(g) if lo is None else [lo] + [f[g[0]]] * (len(g) - 1)
        assert np.sort(predicted)[3:] == pytest.approx(np.sort(frequencies_at_gamma(phonon, q))[3:], rel=1e-6)
    # an A1 (non-polar) group never has an LO partner, whatever the direction
    for q in ([0, 0, 1], [1, 0, 0], [0.3, 0.2, 1.0]):
        assert all(p.irrep != "A1" for p in lo_to_pairs(res, phonon, q))


def test_lo_to_pairs_of_the_shipped_quartz_model_never_put_an_lo_below_its_to():
    """sio2.pt on the 9-atom alpha-quartz cell (Gamma force constants are exact in it): quartz's two highest E
    modes mix strongly along x (the LO near 1130 cm^-1 is 97 % the weak 1132 cm^-1 TO mode); paired by order, the
    strong ~1048 mode gets the 1130 LO and the weak one the ~1209 LO, as measured TO/LO pairs are listed
    (an eigenvector-overlap assignment gave the weak mode an LO 1.3 cm^-1 below its TO)."""
    from ase_etgnn import ETGNNCalculator
    from ase_etgnn.spectra import lo_to_pairs
    from ase_etgnn.structures import alpha_quartz

    calc = ETGNNCalculator("sio2.pt", num_threads=1)
    phonon = make_phonopy(alpha_quartz(), calc, supercell_matrix=[1, 1, 1])
    res = gamma_spectroscopy(phonon, calc, raman=False)
    for q in ([1, 0, 0], [0, 0, 1], [0.3, 0.2, 1.0]):
        assert_interlaced(lo_to_pairs(res, phonon, q))
    strong, weak = lo_to_pairs(res, phonon, [1, 0, 0])[-2:]
    assert weak.overlap < 0.1 and strong.lo_cm1 < weak.to_cm1 < weak.lo_cm1


def test_imaginary_qpoints_named():
    """A stable toy has no q-point below -5 cm^-1; with a negative transverse spring the unstable q-points are
    found, each with its lowest frequency."""
    from ase_etgnn.spectra import imaginary_qpoints
    from ase_etgnn.spectra.units import THZ_TO_CM1

    qpts = [[0, 0, 0], [0.25, 0, 0], [0.5, 0, 0], [0, 0, 0.5]]
    atoms, calc = quartz_toy()
    stable = make_phonopy(atoms, calc, supercell_matrix=[1, 1, 1])
    assert imaginary_qpoints(stable, qpts) == []
    calc.kt = -1.0
    unstable = make_phonopy(atoms, calc, supercell_matrix=[1, 1, 1])
    bad = imaginary_qpoints(unstable, qpts)
    assert bad
    low = np.asarray(unstable.run_qpoints(qpts).frequencies).min(axis=1) * THZ_TO_CM1
    assert [b["index"] for b in bad] == [i for i in range(4) if low[i] < -5.0]
    for b in bad:
        assert b["q"] == qpts[b["index"]] and b["frequency_cm1"] == pytest.approx(low[b["index"]])
