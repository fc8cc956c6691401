"""Tests of ase_etgnn.symmetry: space-group projections, decompositions, GMTNet metrics."""
from __future__ import annotations


import numpy as np
import pytest
import spglib
from ase import Atoms
from scipy.spatial.transform import Rotation

from ase_etgnn.conventions import spglib_quietly
from ase_etgnn.structures import IDEAL_CRYSTAL_SPACE_GROUPS, ideal_crystal_species, ideal_crystals
from ase_etgnn.symmetry import (
    PART_DEGREES,
    CrystalSymmetry,
    elastic_tensor_to_voigt,
    elastic_voigt_to_tensor,
    equality_success,
    format_success_table,
    from_spherical_components,
    irreducible_parts,
    part_irreps,
    rotate_tensor,
    spherical_components,
    success_rates,
    symmetrize_results,
    symmetry_constraints,
    symmetry_success,
    wigner_d,
    zero_success,
)

CRYSTALS = ideal_crystals()
NAMES = list(CRYSTALS)


@pytest.fixture(scope="module")
def syms():
    return {name: CrystalSymmetry.from_atoms(a) for name, a in CRYSTALS.items()}


def random_results(n_atoms: int, rng: np.random.Generator) -> dict:
    eps = rng.normal(size=(3, 3))
    e = rng.normal(size=(3, 3, 3))
    return {
        "energy": np.array(-3.5),
        "forces": rng.normal(size=(n_atoms, 3)),
        "stress": rng.normal(size=6),
        "born_effective_charges": rng.normal(size=(n_atoms, 3, 3)),
        "dielectric_tensor": eps + eps.T,
        "piezoelectric_tensor": e + e.transpose(0, 2, 1),
    }


def random_elastic(rng: np.random.Generator) -> np.ndarray:
    C6 = rng.normal(size=(6, 6))
    return elastic_voigt_to_tensor(C6 + C6.T)


def rotate_per_atom(X: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return np.stack([rotate_tensor(x, Q) for x in X])


# ------------------------------------------------------------------------------------ crystals / groups
def spglib_space_groups(symprec: float = 1e-5) -> dict:
    """name -> space-group number that spglib itself finds for every ideal crystal."""
    found = {}
    for name, atoms in ideal_crystals().items():
        cell = (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers)
        with spglib_quietly():
            ds = spglib.get_symmetry_dataset(cell, symprec=symprec)
        found[name] = -1 if ds is None else int(ds.number)
    return found


def test_test_crystals_have_intended_space_groups(syms):
    found = spglib_space_groups()
    assert found == {k: v[0] for k, v in IDEAL_CRYSTAL_SPACE_GROUPS.items()}
    assert {v[1] for v in IDEAL_CRYSTAL_SPACE_GROUPS.values()} == {
        "triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic"}
    for name, s in syms.items():
        assert s.spacegroup_number == IDEAL_CRYSTAL_SPACE_GROUPS[name][0]
        assert s.crystal_system == IDEAL_CRYSTAL_SPACE_GROUPS[name][1]
    assert syms["SiO2_alpha_quartz"].spacegroup_symbol == "P3_221"
    assert syms["SiO2_alpha_quartz"].point_group == "32"
    assert "Si" in ideal_crystal_species() and "O" in ideal_crystal_species()


@pytest.mark.parametrize("name", NAMES)
def test_operations_orthogonal_and_map_structure_onto_itself(name, syms):
    atoms, s = CRYSTALS[name], syms[name]
    R = s.rotations
    assert np.abs(np.einsum("gji,gjk->gik", R, R) - np.eye(3)).max() < 1e-12
    assert np.allclose(np.abs(np.linalg.det(R)), 1.0)
    # the naive conversion L^T W L^-T agrees for ideal crystals
    A = atoms.cell[:].T
    naive = np.einsum("ij,gjk,kl->gil", A, s.frac_rotations, np.linalg.inv(A))
    assert np.abs(naive - R).max() < 1e-10
    # r_{g(a)} = R r_a + tau  (modulo lattice vectors)
    pos = atoms.positions
    cellinv = np.linalg.inv(atoms.cell[:])
    for g in range(s.n_operations):
        tau = s.frac_translations[g] @ atoms.cell[:]
        image = pos @ R[g].T + tau
        d = (image - pos[s.permutations[g]]) @ cellinv
        d -= np.round(d)
        assert np.abs(d @ atoms.cell[:]).max() < 1e-8
        assert np.array_equal(atoms.numbers[s.permutations[g]], atoms.numbers)
        assert sorted(s.permutations[g]) == list(range(len(atoms)))
    # point group closed under multiplication, order = distinct rotations
    keys = {tuple(np.round(r, 8).ravel()) for r in s.point_rotations}
    assert len(keys) == s.order
    for r1 in s.point_rotations[:8]:
        for r2 in s.point_rotations[:8]:
            assert tuple(np.round(r1 @ r2, 8).ravel()) in keys


def test_trivial_groups():
    mol = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    s = CrystalSymmetry.from_atoms(mol)
    assert s.is_trivial and not s.periodic
    slab = CRYSTALS["NaCl_rocksalt"].copy()
    slab.pbc = [True, True, False]
    assert CrystalSymmetry.from_atoms(slab).is_trivial
    with pytest.raises(ValueError, match="empty"):
        CrystalSymmetry.from_atoms(Atoms())
    with pytest.raises(ValueError, match="symprec"):
        CrystalSymmetry.from_atoms(CRYSTALS["NaCl_rocksalt"], symprec=0.0)


def test_failures_fall_back_to_identity_with_warning():
    from ase_etgnn.symmetry.projection import _atom_permutations

    overlapping = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 0]], cell=[3, 3, 3], pbc=True)
    with pytest.warns(RuntimeWarning, match="identity only"):
        assert CrystalSymmetry.from_atoms(overlapping).is_trivial
    a = CRYSTALS["ZnO_wurtzite"]
    W, t = np.eye(3, dtype=int)[None], np.array([[0.1, 0.0, 0.0]])
    with pytest.raises(RuntimeError, match="does not map"):
        _atom_permutations(a.cell[:], a.get_scaled_positions(), a.numbers, W, t, tol=1e-5)


# ------------------------------------------------------------------------------------ projections
@pytest.mark.parametrize("name", NAMES)
def test_projection_idempotent_and_symmetric(name, syms):
    s = syms[name]
    rng = np.random.default_rng(1)
    res = random_results(s.n_atoms, rng)
    res["elastic_tensor"] = random_elastic(rng)
    once = s.symmetrize(res)
    twice = s.symmetrize(once)
    for k in once:
        np.testing.assert_allclose(twice[k], once[k], atol=1e-12, err_msg=k)
    # results are invariant: T = R.T, F[g(a)] = R F[a], Z[g(a)] = R Z[a] R^T
    for R, perm in zip(s.rotations, s.permutations):
        for key in ("dielectric_tensor", "piezoelectric_tensor", "elastic_tensor"):
            np.testing.assert_allclose(rotate_tensor(once[key], R), once[key], atol=1e-12)
        np.testing.assert_allclose(once["forces"][perm], once["forces"] @ R.T, atol=1e-12)
        Z = once["born_effective_charges"]
        np.testing.assert_allclose(Z[perm], np.einsum("ik,akl,jl->aij", R, Z, R), atol=1e-12)
    np.testing.assert_allclose(once["born_effective_charges"].sum(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(once["piezoelectric_tensor"], once["piezoelectric_tensor"].transpose(0, 2, 1))
    assert once["energy"] == res["energy"] and once["stress"].shape == (6,)
    # the projection is orthogonal: residual orthogonal to the symmetric subspace
    for key in ("dielectric_tensor", "piezoelectric_tensor"):
        resid = res[key] - once[key]
        assert abs(np.sum(resid * once[key])) < 1e-10
    # matrices agree with the direct implementation
    P = s.per_atom_projector(2, asr=True)
    np.testing.assert_allclose(P @ P, P, atol=1e-12)
    np.testing.assert_allclose(P, P.T, atol=1e-12)
    np.testing.assert_allclose((P @ res["born_effective_charges"].ravel()).reshape(-1, 3, 3),
                               once["born_effective_charges"], atol=1e-12)
    P3 = s.tensor_projector(3, "symmetric_last2")
    np.testing.assert_allclose((P3 @ res["piezoelectric_tensor"].ravel()).reshape(3, 3, 3),
                               once["piezoelectric_tensor"], atol=1e-12)


def test_input_not_modified_and_new_arrays(syms):
    s = syms["ZnO_wurtzite"]
    res = random_results(s.n_atoms, np.random.default_rng(2))
    copy = {k: np.array(v) for k, v in res.items()}
    out = s.symmetrize(res)
    for k in res:
        assert np.array_equal(res[k], copy[k])
        assert not np.shares_memory(out[k], res[k])


def test_symmetric_inputs_unchanged(syms):
    s = syms["SiO2_alpha_quartz"]
    res = s.symmetrize(random_results(s.n_atoms, np.random.default_rng(3)))
    again = s.symmetrize(res)
    for k in res:
        np.testing.assert_allclose(again[k], res[k], atol=1e-13)
    # rocksalt: eps isotropic, Z isotropic +-z, forces zero on inversion centres
    s = syms["NaCl_rocksalt"]
    out = s.symmetrize(random_results(2, np.random.default_rng(4)))
    eps = out["dielectric_tensor"]
    np.testing.assert_allclose(eps, eps[0, 0] * np.eye(3), atol=1e-13)
    Z = out["born_effective_charges"]
    np.testing.assert_allclose(Z[0], Z[0, 0, 0] * np.eye(3), atol=1e-13)
    np.testing.assert_allclose(Z[1], -Z[0], atol=1e-13)
    np.testing.assert_allclose(out["forces"], 0, atol=1e-13)
    np.testing.assert_allclose(out["piezoelectric_tensor"], 0, atol=1e-13)


def test_forces_direction_convention():
    """A force pattern generated by symmetry, F[g(a)] = R F[a], survives projection (direction check)."""
    atoms = CRYSTALS["SiO2_alpha_quartz"]
    s = CrystalSymmetry.from_atoms(atoms)
    # O atoms (general positions): a pattern from one O atom propagated by the group
    a0 = int(np.nonzero(atoms.numbers == 8)[0][0])
    f0 = np.array([0.3, -0.7, 0.2])
    F = np.zeros((len(atoms), 3))
    for R, perm in zip(s.rotations, s.permutations):
        F[perm[a0]] = R @ f0
    np.testing.assert_allclose(s.symmetrize_vectors(F), F, atol=1e-13)
    # the transposed (wrong) convention would not leave it unchanged
    wrong = np.einsum("gij,gaj->ai", s.rotations, F[s.permutations]) / s.n_operations
    assert np.abs(wrong - F).max() > 1e-2


def test_no_symmetry_is_exact_noop():
    atoms = CRYSTALS["ZrO2_baddeleyite"].copy()
    atoms.rattle(0.05, seed=1)
    atoms.cell[0, 1] += 0.013
    s = CrystalSymmetry.from_atoms(atoms)
    assert s.is_trivial and s.spacegroup_number == 1
    res = random_results(len(atoms), np.random.default_rng(5))
    out = s.symmetrize(res, asr=False)
    for k in res:
        assert np.array_equal(out[k], res[k]), k
    out = s.symmetrize(res, asr=True)
    Z = res["born_effective_charges"]
    np.testing.assert_allclose(out["born_effective_charges"], Z - Z.mean(axis=0), atol=1e-15)


def test_nearly_symmetric_structure_with_loose_symprec():
    atoms = CRYSTALS["ZnO_wurtzite"].copy()
    atoms.rattle(1e-4, seed=2)
    assert CrystalSymmetry.from_atoms(atoms, symprec=1e-5).spacegroup_number < 186
    s = CrystalSymmetry.from_atoms(atoms, symprec=1e-3)
    assert s.spacegroup_number == 186
    assert np.abs(np.einsum("gji,gjk->gik", s.rotations, s.rotations) - np.eye(3)).max() < 1e-12
    out = s.symmetrize(random_results(len(atoms), np.random.default_rng(6)))
    np.testing.assert_allclose(s.symmetrize(out)["dielectric_tensor"], out["dielectric_tensor"], atol=1e-12)


@pytest.mark.parametrize("name", ["SiO2_alpha_quartz", "BaTiO3_P4mm", "Al2O3_corundum"])
def test_supercell_matches_primitive(name):
    prim = CRYSTALS[name]
    sup = prim.repeat((2, 2, 2))
    sp, ss = CrystalSymmetry.from_atoms(prim), CrystalSymmetry.from_atoms(sup)
    assert ss.n_operations == 8 * sp.n_operations
    rng = np.random.default_rng(7)
    res = random_results(len(prim), rng)
    res_sup = dict(res)
    res_sup["forces"] = np.tile(res["forces"], (8, 1))
    res_sup["born_effective_charges"] = np.tile(res["born_effective_charges"], (8, 1, 1))
    op, os_ = sp.symmetrize(res), ss.symmetrize(res_sup)
    for k in ("dielectric_tensor", "piezoelectric_tensor", "stress"):
        np.testing.assert_allclose(os_[k], op[k], atol=1e-12)
    np.testing.assert_allclose(os_["forces"], np.tile(op["forces"], (8, 1)), atol=1e-12)
    np.testing.assert_allclose(os_["born_effective_charges"], np.tile(op["born_effective_charges"], (8, 1, 1)),
                               atol=1e-12)
    # non-periodic per-atom input becomes periodic (translations are in the group)
    Z = ss.symmetrize_atom_tensors(rng.normal(size=(len(sup), 3, 3)))
    np.testing.assert_allclose(Z, np.tile(Z[: len(prim)], (8, 1, 1)), atol=1e-12)


@pytest.mark.parametrize("name", ["SiO2_alpha_quartz", "ZnO_wurtzite", "ZrO2_baddeleyite"])
def test_rotation_commutes_with_symmetrization(name):
    atoms = CRYSTALS[name]
    Q = Rotation.random(random_state=11).as_matrix()
    rot = atoms.copy()
    rot.set_cell(atoms.cell[:] @ Q.T, scale_atoms=True)
    np.testing.assert_allclose(rot.positions, atoms.positions @ Q.T, atol=1e-10)
    s, sr = CrystalSymmetry.from_atoms(atoms), CrystalSymmetry.from_atoms(rot)
    assert sr.spacegroup_number == s.spacegroup_number
    rng = np.random.default_rng(8)
    res = random_results(len(atoms), rng)
    res.pop("stress")
    res["elastic_tensor"] = random_elastic(rng)
    res_r = {k: (v if k == "energy" else rotate_per_atom(v, Q) if k in ("forces", "born_effective_charges")
                 else rotate_tensor(v, Q)) for k, v in res.items()}
    out, out_r = s.symmetrize(res), sr.symmetrize(res_r)
    for k in ("dielectric_tensor", "piezoelectric_tensor", "elastic_tensor"):
        np.testing.assert_allclose(out_r[k], rotate_tensor(out[k], Q), atol=1e-10, err_msg=k)
    for k in ("forces", "born_effective_charges"):
        np.testing.assert_allclose(out_r[k], rotate_per_atom(out[k], Q), atol=1e-10, err_msg=k)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["SiO2_alpha_quartz", "TiO2_rutile", "ZnO_wurtzite", "Al2O3_corundum"])
def test_matches_phonopy(name):
    from phonopy.structure.atoms import PhonopyAtoms
    from phonopy.structure.symmetry import symmetrize_borns_and_epsilon

    atoms = CRYSTALS[name]
    rng = np.random.default_rng(9)
    borns = rng.normal(size=(len(atoms), 3, 3))
    eps = rng.normal(size=(3, 3))
    eps = eps + eps.T
    ucell = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell[:],
                         scaled_positions=atoms.get_scaled_positions())
    with pytest.warns(UserWarning):  # phonopy warns that random charges are "largely broken"
        pb, pe = symmetrize_borns_and_epsilon(borns, eps, ucell, symprec=1e-5)
    out = symmetrize_results(atoms, {"born_effective_charges": borns, "dielectric_tensor": eps})
    np.testing.assert_allclose(out["born_effective_charges"], pb, atol=1e-10)
    np.testing.assert_allclose(out["dielectric_tensor"], pe, atol=1e-10)


def test_voigt_layouts_in_symmetrize(syms):
    rng = np.random.default_rng(16)
    C6 = rng.normal(size=(6, 6))
    out = syms["SrTiO3_cubic"].symmetrize({"elastic_tensor": C6 + C6.T, "stress": rng.normal(size=6)})
    C = out["elastic_tensor"]
    assert C.shape == (6, 6)
    assert np.allclose(np.diag(C)[:3], C[0, 0]) and np.allclose(np.diag(C)[3:], C[3, 3])
    assert np.allclose(C[[0, 0, 1], [1, 2, 2]], C[0, 1]) and np.allclose(C[:3, 3:], 0)
    stress = out["stress"]
    assert stress.shape == (6,) and np.allclose(stress[:3], stress[0]) and np.allclose(stress[3:], 0)
    s3 = syms["ZnO_wurtzite"].symmetrize({"stress": np.arange(9.0).reshape(3, 3)})["stress"]
    np.testing.assert_allclose(s3, np.diag([2.0, 2.0, 8.0]), atol=1e-13)


def test_conservative_forces_symmetrized_as_forces(syms):
    """``forces_conservative`` (not a registry property) is projected like the forces it stands for."""
    s = syms["SrTiO3_cubic"]
    F = np.random.default_rng(5).normal(size=(s.n_atoms, 3))
    out = s.symmetrize({"forces": F, "forces_conservative": F})
    np.testing.assert_allclose(out["forces_conservative"], s.symmetrize_vectors(F), atol=1e-13)
    np.testing.assert_allclose(out["forces_conservative"], out["forces"], atol=0)
    assert not np.allclose(out["forces_conservative"], F)  # the projection did something


def test_symmetrize_validates_shapes(syms):
    s = syms["GaAs_zincblende"]
    with pytest.raises(ValueError, match="forces"):
        s.symmetrize({"forces": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="per-atom tensors"):
        s.symmetrize({"born_effective_charges": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="dielectric_tensor"):
        s.symmetrize({"dielectric_tensor": np.zeros((3,))})


# ------------------------------------------------------------------------------------ decompositions
def _random_tensor(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "rank2":
        return rng.normal(size=(3, 3))
    if kind == "piezo":
        e = rng.normal(size=(3, 3, 3))
        return e + e.transpose(0, 2, 1)
    return random_elastic(rng)


@pytest.mark.parametrize("kind", ["rank2", "piezo", "elastic"])
def test_decomposition_sum_orthogonal_norms(kind):
    rng = np.random.default_rng(10)
    T = _random_tensor(kind, rng)
    parts = irreducible_parts(T, kind)
    assert list(parts) == list(PART_DEGREES[kind])
    np.testing.assert_allclose(sum(parts.values()), T, atol=1e-12)
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert abs(np.sum(parts[a] * parts[b])) < 1e-10, (a, b)
    np.testing.assert_allclose(sum(np.sum(p ** 2) for p in parts.values()), np.sum(T ** 2), rtol=1e-12)
    comps = spherical_components(T, kind)
    for name, c in comps.items():
        assert c.shape == (2 * PART_DEGREES[kind][name] + 1,)
        assert np.isclose(np.linalg.norm(c), np.linalg.norm(parts[name]))
    np.testing.assert_allclose(from_spherical_components(comps, kind), T, atol=1e-12)
    # parts are idempotent and pure
    for name, p in parts.items():
        pp = irreducible_parts(p, kind)
        for other, q in pp.items():
            np.testing.assert_allclose(q, p if other == name else 0 * p, atol=1e-12)
    assert set(part_irreps(kind)) == set(parts)


def test_decomposition_explicit_forms():
    rng = np.random.default_rng(12)
    M = rng.normal(size=(3, 3))
    p = irreducible_parts(M)
    np.testing.assert_allclose(p["l0"], np.trace(M) / 3 * np.eye(3), atol=1e-13)
    np.testing.assert_allclose(p["l1"], (M - M.T) / 2, atol=1e-13)
    np.testing.assert_allclose(p["l2"], (M + M.T) / 2 - np.trace(M) / 3 * np.eye(3), atol=1e-13)
    e = _random_tensor("piezo", rng)
    p = irreducible_parts(e)
    S = (e + e.transpose(1, 0, 2) + e.transpose(2, 1, 0)) / 3  # totally symmetric part (e sym in j,k)
    np.testing.assert_allclose(p["S_l1"] + p["S_l3"], S, atol=1e-12)
    assert np.abs(np.einsum("iik->k", p["S_l3"])).max() < 1e-12  # harmonic (traceless)
    C = random_elastic(rng)
    p = irreducible_parts(C)
    assert np.abs(np.einsum("iikk->", p["S_l2"] + p["S_l4"])).max() < 1e-12
    np.testing.assert_allclose(np.einsum("iijk->jk", p["S_l4"]), 0, atol=1e-12)
    # isotropic elastic tensor has only l = 0 parts
    lam, mu = 1.3, 0.7
    d = np.eye(3)
    C_iso = lam * np.einsum("ij,kl->ijkl", d, d) + mu * (np.einsum("ik,jl->ijkl", d, d)
                                                          + np.einsum("il,jk->ijkl", d, d))
    p = irreducible_parts(C_iso)
    for name in ("S_l2", "S_l4", "A_l2"):
        assert np.abs(p[name]).max() < 1e-12
    np.testing.assert_allclose(elastic_tensor_to_voigt(elastic_voigt_to_tensor(np.arange(36.0).reshape(6, 6)
                                                                                + np.arange(36.0).reshape(6, 6).T)),
                               np.arange(36.0).reshape(6, 6) + np.arange(36.0).reshape(6, 6).T)
    with pytest.raises(ValueError, match="index symmetry"):
        irreducible_parts(rng.normal(size=(3, 3, 3)))


@pytest.mark.parametrize("kind", ["rank2", "piezo", "elastic"])
def test_decomposition_equivariance_and_wigner_d(kind):
    rng = np.random.default_rng(13)
    T = _random_tensor(kind, rng)
    parts, comps = irreducible_parts(T, kind), spherical_components(T, kind)
    rank = T.ndim
    for seed in range(3):
        Q = Rotation.random(random_state=seed).as_matrix()
        TR = rotate_tensor(T, Q)
        parts_r, comps_r = irreducible_parts(TR, kind), spherical_components(TR, kind)
        for name, l in PART_DEGREES[kind].items():
            np.testing.assert_allclose(parts_r[name], rotate_tensor(parts[name], Q), atol=1e-11)
            assert np.isclose(np.linalg.norm(parts_r[name]), np.linalg.norm(parts[name]))
            np.testing.assert_allclose(comps_r[name], wigner_d(l, Q) @ comps[name], atol=1e-11)
        # improper rotation: D^l(R) times the parity (-1)^rank
        comps_i = spherical_components(rotate_tensor(T, -Q), kind)
        for name, l in PART_DEGREES[kind].items():
            np.testing.assert_allclose(comps_i[name], (-1) ** rank * wigner_d(l, Q) @ comps[name], atol=1e-11)


def test_wigner_d_properties():
    Q1, Q2 = Rotation.random(2, random_state=3).as_matrix()
    perm = np.eye(3)[[1, 2, 0]]  # (x, y, z) -> (y, z, x)
    np.testing.assert_allclose(wigner_d(1, Q1), perm @ Q1 @ perm.T, atol=1e-12)
    for l in range(5):
        D1, D2 = wigner_d(l, Q1), wigner_d(l, Q2)
        np.testing.assert_allclose(wigner_d(l, Q1 @ Q2), D1 @ D2, atol=1e-11)
        np.testing.assert_allclose(D1 @ D1.T, np.eye(2 * l + 1), atol=1e-12)
    np.testing.assert_allclose(wigner_d(3, np.eye(3)), np.eye(7), atol=1e-14)
    with pytest.raises(ValueError, match="proper"):
        wigner_d(2, -np.eye(3))


def test_symmetrized_tensor_has_only_allowed_irreps(syms):
    """Cubic (m-3m): eps and the elastic tensor keep no l = 2 content; the cubic l = 4 invariant survives."""
    rng = np.random.default_rng(14)
    s = syms["NaCl_rocksalt"]
    eps = s.symmetrize_tensor(rng.normal(size=(3, 3)), "symmetric")
    assert np.abs(irreducible_parts(eps)["l2"]).max() < 1e-12
    C = s.symmetrize_tensor(random_elastic(rng), "voigt")
    p = irreducible_parts(C)
    assert np.abs(p["S_l2"]).max() < 1e-12 and np.abs(p["A_l2"]).max() < 1e-12
    assert np.abs(p["S_l4"]).max() > 1e-3  # the cubic l = 4 invariant survives


# ------------------------------------------------------------------------------------ GMTNet metrics
def test_constraints_match_textbook_forms(syms):
    def count(name, prop):
        c = symmetry_constraints(syms[name], prop)
        return len(c.zero), len(c.equal), len(c.opposite)

    assert count("NaCl_rocksalt", "dielectric_tensor") == (3, 3, 0)
    assert count("ZnO_wurtzite", "dielectric_tensor") == (3, 1, 0)
    assert count("ZrO2_baddeleyite", "dielectric_tensor") == (2, 0, 0)
    assert count("LiAlO_triclinic_toy", "dielectric_tensor") == (0, 0, 0)
    # alpha-quartz (32): e11, e12 = -e11, e26 = -e11, e14, e25 = -e14 (Nye)
    assert count("SiO2_alpha_quartz", "piezoelectric_tensor") == (13, 1, 3)
    # wurtzite (6mm): e15 = e24, e31 = e32, e33 -> 13 zeros
    assert count("ZnO_wurtzite", "piezoelectric_tensor") == (13, 2, 0)
    # zincblende (-43m): e14 = e25 = e36
    assert count("GaAs_zincblende", "piezoelectric_tensor") == (15, 3, 0)
    assert count("SiO2_alpha_quartz", "elastic_tensor") == (9, 4, 2)
    assert count("ZnO_wurtzite", "born_effective_charges") == (24, 4, 0)
    with pytest.raises(ValueError, match="no symmetry constraints"):
        symmetry_constraints(syms["ZnO_wurtzite"], "forces")


@pytest.mark.parametrize("prop", ["dielectric_tensor", "piezoelectric_tensor", "born_effective_charges"])
def test_success_metrics_on_projected_and_random(prop, syms):
    rng = np.random.default_rng(15)
    proj, raw = [], []
    for name, s in syms.items():
        res = random_results(s.n_atoms, rng)
        proj.append((s, s.symmetrize(res)[prop]))
        raw.append((s, res[prop]))
    rp, rr = success_rates(proj, prop), success_rates(raw, prop)
    assert rp["all"]["n"] == len(syms)
    for row in rp.values():
        assert row["zero_rate"] == 1.0 or row["n_zero"] == 0
        assert row["equality_rate"] == 1.0 or row["n_equal"] == 0
    assert rr["all"]["zero_rate"] == 0.0
    if rr["all"]["n_equal"]:
        assert rr["all"]["equality_rate"] == 0.0
    assert "cubic" in format_success_table(rp)


def test_single_prediction_metrics(syms):
    atoms = CRYSTALS["ZnO_wurtzite"]
    eps = np.diag([5.0, 5.0, 6.0])
    assert zero_success(eps, atoms, "dielectric_tensor") is True
    assert equality_success(eps, atoms, "dielectric_tensor") is True
    bad = eps.copy()
    bad[0, 1] = bad[1, 0] = 2e-5
    bad[1, 1] += 2e-4
    assert zero_success(bad, atoms, "dielectric_tensor") is False
    assert equality_success(bad, atoms, "dielectric_tensor") is False
    r = symmetry_success(bad, syms["ZnO_wurtzite"], "dielectric_tensor")
    assert r["n_zero"] == 3 and r["n_equal"] == 1 and r["crystal_system"] == "hexagonal"
    assert np.isclose(r["max_zero_error"], 2e-5) and r["zero_error_ratio"] > 0
    assert zero_success(np.eye(3), syms["LiAlO_triclinic_toy"], "dielectric_tensor") is None
    with pytest.raises(ValueError, match="shape"):
        zero_success(np.eye(2), atoms, "dielectric_tensor")


# ------------------------------------------------------------------------------------ model
def test_random_model_predictions_symmetrize_to_full_success():
    import torch

    from ase_etgnn import build_model
    from ase_etgnn.graph import atoms_to_graph, collate_graphs

    heads = ("forces", "born_effective_charges", "dielectric_tensor", "piezoelectric_tensor")
    small = dict(cutoff=5.0, hidden=32, triplet_hidden=32, n_blocks=2, int_emb=16, out_emb=32)
    try:  # a small model keeps the test fast; fall back to defaults if hyper-parameter names change
        model = build_model(species=list(ideal_crystal_species()), heads=heads, seed=0, dtype=torch.float64, **small)
    except TypeError:
        model = build_model(species=list(ideal_crystal_species()), heads=heads, seed=0, dtype=torch.float64)
    model.eval()
    names = list(CRYSTALS)
    graphs = [atoms_to_graph(CRYSTALS[n], cutoff=model.config.cutoff,
                             triplet_cutoff=model.config.triplet_cutoff) for n in names]
    batch = collate_graphs(graphs, dtype=torch.float64, device="cpu")
    with torch.no_grad():
        out = model(batch)
    out = {k: v.detach().cpu().numpy() for k, v in out.items() if k in heads}
    assert set(out) == set(heads)
    for k in ("born_effective_charges", "dielectric_tensor", "piezoelectric_tensor"):
        assert np.abs(out[k]).max() > 1e-6, f"{k}: random model predicts zeros, the test would be vacuous"
    offsets = np.cumsum([0] + [len(CRYSTALS[n]) for n in names])
    for i, name in enumerate(names):
        s = CrystalSymmetry.from_atoms(CRYSTALS[name])
        pred = {"forces": out["forces"][offsets[i]:offsets[i + 1]],
                "born_effective_charges": out["born_effective_charges"][offsets[i]:offsets[i + 1]],
                "dielectric_tensor": out["dielectric_tensor"][i],
                "piezoelectric_tensor": out["piezoelectric_tensor"][i]}
        sym = s.symmetrize(pred)
        for prop in ("dielectric_tensor", "piezoelectric_tensor", "born_effective_charges"):
            r = symmetry_success(sym[prop], s, prop, zero_tol=1e-10, equal_tol=1e-10)
            assert r["zero"] in (True, None) and r["equality"] in (True, None), (name, prop, r)
