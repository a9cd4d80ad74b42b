"""The material flow in-process: ``flows/material.py`` and every task body of ``flows/stages.py``
on a real Prefect server, with a tiny real calculator (ASE's EMT on copper, through the
``ase:`` calculator spec) and the embedded dipole model, in seconds.

Nothing is mocked: MD, reference α, the λ-SOAP fit, prediction, the spectrum, transport and the
Parquet writer all run, and the results are read back through DuckDB. The Prefect server is
the project's own (``flows/server.py``), started once for the module.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ase.build import bulk
from campaign_helpers import prefect_server  # noqa: F401 - fixture

from ramanscreen.tasks.structures import write_structure

REPO = Path(__file__).resolve().parents[1]

CAMPAIGN = """
name = "inproc"
results_root = "{root}"

[mlff]
calculator = "ase:ase.calculators.emt:EMT"

[md]
dt_fs = 5.0
equil_steps = 10
steps = 200
write_every = 2
alpha_stride = 1
checkpoint_every = 50
num_threads = 1

[reference]
backend = "dipole"
n_train = 8
n_test = 4
retries = 0
series_frames = 48

[model]
committee = 2
hypers = {{ cutoff_A = 3.5, max_radial = 2, max_angular = 2 }}

[prediction]
chunk_frames = 40

[spectrum]
omega_min_cm1 = 100.0
omega_c_cm1 = 300.0
host_window_cm1 = [300.0, 1500.0]

[transport]
method = "blocks"

[ranking]
d_liquid_cm2_s = 1e-5
cp_threshold = 0.2

[[materials]]
name = "Cu"
structure = "cu.extxyz"
temperature_k = 600
mobile = ["Cu"]
"""


def _documented_columns() -> dict[str, list[str]]:
    """table -> the columns docs/results.md documents for it (its schema tables)."""
    text = (REPO / "docs" / "results.md").read_text()
    out: dict[str, list[str]] = {}
    for table in ("materials", "spectra", "transport"):
        block = text.split(f"**{table}**", 1)[1].split("\n\n**", 1)[0]
        cols: list[str] = []
        for row in re.findall(r"(?m)^\| ([a-z_0-9A-Z, ]+?) ✱? *\|", block):
            cols += [c.strip() for c in row.split(",") if c.strip() and c.strip() != "column"]
        out[table] = cols
    return out


@pytest.fixture(scope="module")
def screened(prefect_server, tmp_path_factory):  # noqa: F811
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from ramanscreen.flows.material import material_flow
    from ramanscreen.flows.progress import ProgressBoard, watching

    tmp = tmp_path_factory.mktemp("inproc")
    write_structure(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), tmp / "cu.extxyz")
    campaign = tmp / "inproc.toml"
    campaign.write_text(CAMPAIGN.format(root=tmp / "results"))
    board = ProgressBoard()
    # logs stay local: the server stops with this module, and nothing should try to reach it after
    settings = {PREFECT_API_URL: prefect_server.api_url, PREFECT_LOGGING_TO_API_ENABLED: False}
    with temporary_settings(updates=settings), watching(board):
        first = material_flow(str(campaign), "Cu")
        seen = [r.stage for r in board.snapshot()]
        again = material_flow(str(campaign), "Cu")
    return {"root": tmp / "results", "first": first, "again": again, "board": board, "stages": seen,
            "campaign": campaign}


def test_the_material_flow_runs_every_stage_into_parquet(screened) -> None:
    from ramanscreen.analytics.db import connect

    s = screened["first"]
    assert s["material"] == "Cu" and s["n_frames"] == 101 and s["n_alpha"] == 101
    assert Path(s["spectrum_png"]).stat().st_size > 1000
    assert s["D_cm2_s"] is not None and s["ml_metrics"]["n_test"] == 4
    con = connect(screened["root"])
    try:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("materials", "spectra", "transport", "descriptors", "ml_metrics", "msd", "vdos")}
        mat = con.execute("SELECT reference_method, mlff, n_train, omega_min_cm1, omega_c_cm1, host_low_cm1, "
                          "host_high_cm1, rank_metric, d_liquid_cm2_s, cp_threshold FROM materials").fetchone()
        cp = con.execute("SELECT cp_lo_cm1, cp_hi_cm1, cp_top_cm1, cp_fraction FROM central_peak").fetchone()
        desc = con.execute("SELECT fraction_below_omega_c FROM descriptors").fetchone()[0]
    finally:
        con.close()
    assert counts["materials"] == counts["transport"] == counts["descriptors"] == counts["ml_metrics"] == 1
    assert counts["spectra"] > 20 and counts["msd"] > 20 and counts["vdos"] > 20
    # labelled: the reference values come from the embedded dipole model, not DFPT
    assert "not DFPT" in mat[0] and mat[1] == "ase:ase.calculators.emt:EMT" and mat[2] == 8
    # the run records the campaign's windows and thresholds, and the view uses them
    assert mat[3:] == (100.0, 300.0, 300.0, 1500.0, "cp_fraction", 1e-5, 0.2)
    assert cp[:3] == (100.0, 300.0, 1500.0)
    assert cp[3] == pytest.approx(desc, rel=0.1)  # the same windows as the run's own descriptor


def test_every_documented_column_is_filled(screened) -> None:
    """Stage results go to Parquet unchanged: nothing docs/results.md documents is left empty
    (pressure_gpa included: this NVT run at its built density records 0 GPa)."""
    from ramanscreen.analytics.db import connect

    documented = _documented_columns()
    assert {"depolarization_ratio", "band_low", "a2"} <= set(documented["spectra"])
    assert {"msd_exponent", "alpha2_peak", "alpha2_peak_time_ps", "sigma_err_S_cm"} <= set(documented["transport"])
    con = connect(screened["root"])
    try:
        for table, cols in documented.items():
            for col in cols:
                n_null = con.execute(f'SELECT count(*) FILTER (WHERE "{col}" IS NULL) FROM {table}').fetchone()[0]
                # the depolarisation ratio is null only where I_par = 0: the ω = 0 bin
                allowed = 1 if col == "depolarization_ratio" else 0
                assert n_null <= allowed, f"{table}.{col}: {n_null} nulls"
        assert con.execute("SELECT DISTINCT pressure_gpa FROM transport").fetchall() == [(0.0,)]
        for col in ("alpha2", "msd_slope"):
            assert con.execute(f"SELECT count(*) FILTER (WHERE {col} IS NOT NULL) FROM msd").fetchone()[0] > 0, col
    finally:
        con.close()


def test_convergence_and_block_error_are_written_and_a_short_run_is_flagged(screened) -> None:
    """101 α samples 10 fs apart pass the 100–300 cm⁻¹ window, their half (50 samples, 67 cm⁻¹
    bins) does not: the run is ranked, with converged = False and the reason; N_T = 8 gives a
    refit on 4 frames (½) and none on 2 (¼)."""
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import ranking

    con = connect(screened["root"])
    try:
        rows = con.execute("SELECT test, fraction, n_alpha, n_train, spectrum_l2_change, cp_fraction_change, D_cm2_s, "
                           "note FROM convergence ORDER BY test, fraction").fetchall()
        n_spectra = con.execute("SELECT count(DISTINCT (test, fraction)) FROM convergence_spectra").fetchone()[0]
        block = con.execute("SELECT cp_fraction_block_err, block_n, block_ps FROM descriptors").fetchone()
        n_err = con.execute("SELECT count(intensity_block_err) FROM spectra WHERE freq_cm1 > 0").fetchone()[0]
        (ranked,) = ranking(con)
    finally:
        con.close()
    by = {(r[0], r[1]): r for r in rows}
    assert sorted(by) == [("training_set", 0.25), ("training_set", 0.5), ("training_set", 1.0),
                          ("trajectory_length", 0.25), ("trajectory_length", 0.5), ("trajectory_length", 1.0)]
    assert by[("trajectory_length", 1.0)][2] == 101 and by[("trajectory_length", 1.0)][4] == 0.0
    assert by[("trajectory_length", 1.0)][6] == pytest.approx(screened["first"]["D_cm2_s"], rel=1e-9)
    assert by[("trajectory_length", 0.5)][4] is None and "must lie above the first two bins" in by[("trajectory_length", 0.5)][7]
    assert by[("training_set", 0.5)][3] == 4 and by[("training_set", 0.5)][4] > 0
    assert by[("training_set", 0.25)][4] is None and "fewer than the 4" in by[("training_set", 0.25)][7]
    assert n_spectra == 3  # the two full-run spectra and the N_T/2 refit's
    # 4 blocks of 25 samples: a spectrum each (an error per bin), too coarse for the window (no cp error)
    assert block[0] is None and block[1:] == (4.0, pytest.approx(0.25)) and n_err > 20
    assert ranked["converged"] is False and ranked["rank"] == 1
    assert "trajectory_length ½: no spectrum (50 α samples" in ranked["convergence_note"]


def test_the_flow_writes_the_alpha_parity_of_its_test_frames(screened) -> None:
    """The fit stage's test predictions reach alpha_parity through the flow: 4 test frames × 6
    components, whose RMSE is the run's ml_metrics; MD on the calculator itself: no force_parity."""
    from ramanscreen.analytics.db import connect

    con = connect(screened["root"])
    try:
        n, frames, methods = con.execute("SELECT count(*), count(DISTINCT frame), list(DISTINCT reference_method) "
                                         "FROM alpha_parity").fetchone()
        rmse = dict(con.execute("SELECT kind, sqrt(avg((alpha_predicted_A3 - alpha_reference_A3) ^ 2)) "
                                "FROM alpha_parity GROUP BY kind").fetchall())
        recorded = con.execute("SELECT rmse_diag_A3, rmse_offdiag_A3 FROM ml_metrics").fetchone()
        n_force = con.execute("SELECT count(*) FROM force_parity").fetchone()[0]
    finally:
        con.close()
    assert (n, frames) == (24, 4) and len(methods) == 1 and "not DFPT" in methods[0]
    assert (rmse["diagonal"], rmse["off-diagonal"]) == pytest.approx(recorded, rel=1e-12)
    assert n_force == 0


def test_the_flow_writes_the_reference_spectrum_of_its_first_alpha_samples(screened) -> None:
    """Fig. 2D through the flow: [reference] series_frames = 48 gives the first 48 α samples a
    reference α; the table's reference intensities are the spectrum of those frames' reference α
    (recomputed here with the dipole model), its ML intensities that of the α series the spectrum
    stage wrote (alpha.txt, its first 48 samples), both divided by the reference's area."""
    import numpy as np
    from ase.io.trajectory import Trajectory

    from ramanscreen.analytics.db import connect
    from ramanscreen.tasks.convergence import spectrum_l2_change
    from ramanscreen.tasks.reference import get_backend
    from ramanscreen.tasks.spectra import SpectrumSettings, raman_spectrum, read_alpha, window_fraction

    con = connect(screened["root"])
    try:
        d = {k: np.asarray(v) for k, v in con.execute(
            "SELECT freq_cm1, intensity_ml, intensity_reference, l2_difference, l2_shape_difference, cp_fraction_ml, "
            "cp_fraction_reference, n_frames, duration_ps, first_frame, frame_stride, reference_method "
            "FROM reference_spectrum ORDER BY freq_cm1").fetchnumpy().items()}
    finally:
        con.close()
    assert len(d["freq_cm1"]) > 10 and set(d["n_frames"]) == {48} and set(d["first_frame"]) == {0}
    assert set(d["frame_stride"]) == {1} and d["duration_ps"][0] == pytest.approx(48 * 10.0 / 1000.0)
    assert "not DFPT" in d["reference_method"][0]
    s = SpectrumSettings(omega_min_cm1=100.0, omega_c_cm1=300.0, host_window_cm1=(300.0, 1500.0))
    wd = Path(screened["first"]["workdir"])
    with Trajectory(str(next(wd.rglob("md/md.traj")))) as traj:
        frames = [traj[i] for i in range(48)]
    dipole = get_backend("dipole")
    ref = raman_spectrum(np.array([dipole.compute(a).alpha_A3 for a in frames]), 10.0, **s.spectrum_kwargs())
    ml = raman_spectrum(read_alpha(wd / "alpha.txt")[:48], 10.0, **s.spectrum_kwargs())
    np.testing.assert_allclose(d["freq_cm1"], ref.freq_cm1)
    sel = (ref.freq_cm1 >= 100.0) & (ref.freq_cm1 <= min(1500.0, ref.freq_cm1[-1]))
    area = np.trapezoid(ref.intensity[sel], ref.freq_cm1[sel])
    np.testing.assert_allclose(d["intensity_reference"], ref.intensity / area, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(d["intensity_ml"], ml.intensity / area, rtol=1e-6, atol=1e-12)
    assert np.trapezoid(d["intensity_reference"][sel], d["freq_cm1"][sel]) == pytest.approx(1.0)
    cp_ml, cp_ref = window_fraction(ref.freq_cm1, np.stack([ml.intensity, ref.intensity]), **s.descriptor_kwargs())
    assert (d["cp_fraction_ml"][0], d["cp_fraction_reference"][0]) == pytest.approx((cp_ml, cp_ref), rel=1e-6)
    assert d["l2_shape_difference"][0] == pytest.approx(spectrum_l2_change(ref, ml.freq_cm1, ml.intensity,
                                                                           omega_min_cm1=100.0,
                                                                           host_window_cm1=(300.0, 1500.0)), rel=1e-5)
    assert 0.0 < d["l2_difference"][0] < 10.0  # an ML model is not its reference


def test_progress_came_from_the_run_and_a_rerun_is_cached(screened) -> None:
    board = screened["board"]
    (row,) = board.snapshot()
    assert row.stage == "done" and row.material == "Cu"
    # MD progress read from the md.state.json run_md kept up to date: the complete run
    assert (row.md_step, row.md_total, row.md_dt_fs) == (210, 210, 5.0)
    assert row.md_ps == pytest.approx((1.05, 1.05))
    again = screened["again"]
    assert again["run_id"] == screened["first"]["run_id"] and again["D_cm2_s"] == screened["first"]["D_cm2_s"]
    md_traj = next((screened["root"] / "work").rglob("md/md.traj"))
    assert md_traj.is_file()


def test_the_campaign_file_validates_and_names_the_run(screened) -> None:
    from ramanscreen.flows.config import load_campaign
    from ramanscreen.flows.material import material_workdir

    c = load_campaign(screened["campaign"])
    assert material_workdir(c, c.materials[0]).name == screened["first"]["run_id"]
