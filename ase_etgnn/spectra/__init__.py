"""Phonon, IR and Raman workflows for any ASE calculator that provides forces, Born effective
charges (``born_effective_charges``, (N,3,3) e, ``Z[a,i,j] = dF_j/dE_i``) and the electronic
dielectric tensor (``dielectric_tensor``, (3,3)).

Submodules: :mod:`.units` (conversion factors derived from CODATA), :mod:`.phonons` (phonopy
force constants, NAC parameters, BORN files, LO-TO, Gamma modes), :mod:`.infrared` (mode charges,
IR intensities, dielectric function, LST), :mod:`.raman` (Raman tensors/activities, ASE adapter),
:mod:`.recording` (BEC and eps_inf recorded along MD, record files), :mod:`.md` (IR/Raman from
correlation functions), :mod:`.workflow` (one-call Gamma workflow), :mod:`.report` (comparison with experiment, figures).  Frequencies are in cm^-1 throughout.
"""
from .infrared import (
    IR_UNITS,
    LSTCheck,
    broaden,
    ionic_dielectric_tensor,
    ir_dielectric_function,
    ir_intensities,
    lyddane_sachs_teller,
    mode_effective_charges,
    oscillator_strengths,
    static_dielectric_tensor,
)
from .md import (
    MDSpectrum,
    acf_spectrum,
    autocorrelation,
    dipole_derivative,
    ir_spectrum_from_md,
    polarizability_series,
    quantum_correction_factor,
    raman_spectra_from_md,
)
from .phonons import (
    GammaModes,
    atoms_to_phonopy,
    band_path,
    degenerate_groups,
    frequencies_at_gamma,
    gamma_modes,
    imaginary_qpoints,
    make_phonopy,
    nac_params,
    phonopy_to_atoms,
    read_born_file,
    set_nac,
    write_born_file,
)
from .raman import (
    DielectricPolarizability,
    RamanTensors,
    depolarization_ratios,
    polarizability_from_dielectric,
    raman_activities,
    raman_intensities,
    raman_invariants,
    raman_tensors,
)
from .recording import DielectricRecorder, MDRecord, read_md_record, write_md_record
from .report import imaginary_warnings, match_experiment, plot_dispersion, plot_gamma_spectra
from .workflow import (
    GammaSpectra,
    LOTOPair,
    gamma_spectroscopy,
    lo_to_pairs,
    mode_group_table,
    mode_groups,
    relax_positions,
)

__all__ = [
    "IR_UNITS", "LSTCheck", "broaden", "ionic_dielectric_tensor", "ir_dielectric_function",
    "ir_intensities", "lyddane_sachs_teller", "mode_effective_charges", "oscillator_strengths",
    "static_dielectric_tensor",
    "DielectricRecorder", "MDRecord", "MDSpectrum", "acf_spectrum", "autocorrelation",
    "dipole_derivative", "ir_spectrum_from_md", "polarizability_series", "quantum_correction_factor",
    "raman_spectra_from_md", "read_md_record", "write_md_record",
    "GammaModes", "atoms_to_phonopy", "band_path", "degenerate_groups", "frequencies_at_gamma", "gamma_modes", "imaginary_qpoints",
    "make_phonopy", "nac_params", "phonopy_to_atoms", "read_born_file", "set_nac", "write_born_file",
    "DielectricPolarizability", "RamanTensors", "depolarization_ratios",
    "polarizability_from_dielectric", "raman_activities", "raman_intensities", "raman_invariants",
    "raman_tensors",
    "GammaSpectra", "gamma_spectroscopy", "LOTOPair", "lo_to_pairs", "mode_group_table", "mode_groups",
    "relax_positions",
    "imaginary_warnings", "match_experiment", "plot_dispersion", "plot_gamma_spectra",
]
