"""Synthetic results of the paper's four materials, written through the real writer (tests only).

Shared by test_results.py and test_analytics.py, and by the child processes those tests start
(which get this directory on PYTHONPATH from ``conftest.helpers_env``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from ramanscreen.tasks.results import write_run


def write_rattled_nacl(path: Path, n_frames: int, rng: np.random.Generator) -> Path:
    """An ASE trajectory of ``n_frames`` conventional rock-salt NaCl cells (a = 5.64 Å), every
    atom displaced by N(0, 0.15 Å) drawn from ``rng``: structures the dipole model and a small
    α model can be run on in seconds."""
    from ase.build import bulk
    from ase.io.trajectory import Trajectory

    with Trajectory(str(path), "w") as traj:
        for _ in range(n_frames):
            f = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
            f.positions += rng.normal(0, 0.15, f.positions.shape)
            traj.write(f)
    return path

REPO = Path(__file__).resolve().parents[1]

FREQ = np.arange(0.0, 1000.0 + 1e-9, 2.0)  # cm^-1

#: name -> (formula, T, mobile species, D(mobile), D(other), central-peak amplitude, peaks)
SYNTHETIC = {
    "AgI": ("AgI", 500.0, "Ag", 2.8e-5, 4e-8, 6.0, [(90.0, 0.6, 25.0)]),
    "Na3PS4": ("Na3PS4", 900.0, "Na", 1.4e-5, 2e-7, 3.0, [(420.0, 1.0, 8.0), (200.0, 0.3, 15.0)]),
    "Na3SbS4-W": ("Na2.94Sb0.94W0.06S4", 300.0, "Na", 1.0e-6, 1e-9, 0.4,
                  [(350.0, 1.0, 6.0), (470.0, 0.3, 6.0), (150.0, 0.4, 10.0)]),
    "Na3SbS4": ("Na3SbS4", 300.0, "Na", 1.0e-9, 1e-10, 0.05, [(350.0, 1.0, 6.0), (150.0, 0.5, 10.0)]),
}


def synthetic_spectrum(cp_amp: float, peaks: list[tuple[float, float, float]]) -> dict[str, np.ndarray]:
    """A central peak (Lorentzian at 0, width 15 cm^-1) plus Gaussian modes, with a ±10% band."""
    f = FREQ
    y = cp_amp / (1.0 + (f / 15.0) ** 2)
    for centre, height, width in peaks:
        y = y + height * np.exp(-0.5 * ((f - centre) / width) ** 2)
    return {
        "freq_cm1": f, "intensity": y, "band_low": 0.9 * y, "band_high": 1.1 * y,
        "intensity_parallel": 0.8 * y, "intensity_perpendicular": 0.2 * y,
    }


def write_synthetic(root, campaign: str, name: str, run_id: str = "r1", scale: float = 1.0, **over):
    """Write one synthetic material through the real writer; ``scale`` multiplies every D."""
    formula, temp, mobile, d_mob, d_other, cp_amp, peaks = SYNTHETIC[name]
    other = "I" if mobile == "Ag" else "S"
    t = np.linspace(0.0, 10.0, 51)
    kwargs = dict(
        meta=dict(formula=formula, temperature_k=temp, n_atoms=128, mlff="chgnet", reference_method="embedded",
                  n_train=140, mobile_species=mobile, md_dt_fs=2.0, md_equil_ps=1.0, md_production_ps=10.0,
                  alpha_stride=10, structure=name, settings={"seed": 0, "campaign_file": "quick.toml"}),
        spectrum=synthetic_spectrum(cp_amp, peaks),
        transport=[
            {"species": mobile, "D_cm2_s": d_mob * scale, "D_err_cm2_s": 0.1 * d_mob * scale,
             "sigma_S_cm": 1e3 * d_mob * scale, "alpha2_peak": 0.5, "vdos0": 1.0},
            {"species": other, "D_cm2_s": d_other * scale, "D_err_cm2_s": None, "sigma_S_cm": None,
             "alpha2_peak": 0.1, "vdos0": 0.1},
        ],
        descriptors={"frac_below_wc": cp_amp / 10.0, "lowfreq_to_host_ratio": cp_amp, "lowfreq_slope": -1.0},
        ml_metrics=dict(r2_diag=0.95, r2_offdiag=0.85, rmse_diag_A3=0.4, rmse_offdiag_A3=0.2),
        msd={mobile: {"time_ps": t, "msd_A2": 6e4 * d_mob * scale * t}, other: {"time_ps": t, "msd_A2": 0.1 + 0 * t}},
        vdos={"species": [mobile] * 3 + [other] * 3, "freq_cm1": [0.0, 50.0, 100.0] * 2, "vdos": [1.0, 2.0, 1.0, 0.1, 1.0, 2.0]},
    )
    kwargs.update(over)
    return write_run(root, campaign, name, run_id, **kwargs)


def sql(root, query: str):
    con = duckdb.connect()
    con.execute("SET VARIABLE results_root = $1", [str(root)])
    con.execute((REPO / "analytics" / "views.sql").read_text())
    return con.execute(query).fetchall()
