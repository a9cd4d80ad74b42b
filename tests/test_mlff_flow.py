"""The distilled-potential path of the material flow, in-process on a real Prefect server:
distil a SNAP from a teacher (ASE's EMT on copper, a real calculator through the ``ase:`` spec)
→ validate it against the teacher → NPT equilibration then NVT production in LAMMPS → the
unchanged reference/α/spectrum/transport stages → Parquet (with ``mlff_validation``) → the
ranking's ``mlff_flagged``. And a potential that really misses the force criterion (EMT copper
at 6000 K, a hot liquid the 4.5 Å SNAP cannot follow) is refused when the campaign says so.

Also the NPT → NVT hand-over itself, for both engines: the production cell is the mean cell of
the NPT run's last half, and production starts where NPT stopped (no gap, no duplicate frame).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io.trajectory import Trajectory as AseTrajectory
from campaign_helpers import prefect_server  # noqa: F401 - fixture

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.structures import write_structure

EMT_SPEC = "ase:ase.calculators.emt:EMT"

CAMPAIGN = """
name = "{name}"
results_root = "{root}"

[mlff]
calculator = "{spec}"
distil = true
refuse_flagged = {refuse}
teacher_steps = 120
teacher_equil_steps = 20
refine_rounds = 1
compare_dynamics = {compare}

[md]
dt_fs = {dt}
equil_steps = 10
steps = {steps}
write_every = 2
alpha_stride = 1
checkpoint_every = 50
npt_steps = 200
num_threads = 1

[reference]
backend = "dipole"
n_train = 8
n_test = 4
retries = 0

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

[[materials]]
name = "Cu"
label = "fcc Cu (hot)"
structure = "cu.extxyz"
temperature_k = {t}
mobile = ["Cu"]
"""


def _campaign(tmp: Path, name: str, t: float, refuse: bool, dt_fs: float = 5.0, steps: int = 200,
              compare: bool = True) -> Path:
    write_structure(bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), tmp / "cu.extxyz")
    path = tmp / f"{name}.toml"
    path.write_text(CAMPAIGN.format(name=name, root=tmp / "results", spec=EMT_SPEC, refuse=str(refuse).lower(), t=t,
                                    dt=dt_fs, steps=steps, compare=str(compare).lower()))
    return path


@pytest.fixture(scope="module")
def flows(prefect_server, tmp_path_factory):  # noqa: F811
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    from ramanscreen.flows.material import material_flow

    tmp = tmp_path_factory.mktemp("mlff_flow")
    good = _campaign(tmp, "distilled", 900, refuse=False)
    hot = _campaign(tmp, "hot", 6000, refuse=True, dt_fs=2.0, steps=500, compare=False)
    settings = {PREFECT_API_URL: prefect_server.api_url, PREFECT_LOGGING_TO_API_ENABLED: False}
    with temporary_settings(updates=settings):
        summary = material_flow(str(good), "Cu")
        with pytest.raises(InputError) as refused:
            material_flow(str(hot), "Cu")
    return {"root": tmp / "results", "summary": summary, "refused": refused.value, "tmp": tmp}


@pytest.mark.slow
def test_distilled_potential_drives_the_material_flow_into_parquet(flows) -> None:
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import ranking
    from ramanscreen.tasks.mlff import FORCE_RMSE_LIMIT_EV_A

    s = flows["summary"]
    assert s["n_frames"] == 101 and s["n_alpha"] == 101 and s["D_cm2_s"] is not None
    assert s["md_label"] == "snap-distilled-from-emt (not DFT)"
    wd = Path(s["workdir"])
    meta = json.loads((wd / "md" / "md.json").read_text())
    assert meta["engine"] == "lammps" and meta["not_dft"] is True and meta["method"] == s["md_label"]
    assert Path(meta["potential"]["path"]).is_file()
    con = connect(flows["root"])
    try:
        val = con.execute("SELECT species, method, force_rmse_eV_A, force_rmse_limit_eV_A, flagged, "
                          "D_teacher_cm2_s, D_distilled_cm2_s, vdos_overlap, n_holdout_frames FROM mlff_validation "
                          "WHERE campaign = 'distilled'").fetchall()
        mat = con.execute("SELECT mlff, md_engine, phase, npt_equilibrated, pressure_gpa, density_g_cm3, volume_A3, "
                          "cell_a_A FROM materials WHERE campaign = 'distilled'").fetchone()
        rows = ranking(con, "distilled")
    finally:
        con.close()
    (v,) = val
    assert v[0] == "Cu" and v[1] == "snap-distilled-from-emt (not DFT)"
    assert 0 < v[2] < FORCE_RMSE_LIMIT_EV_A == v[3] and v[4] is False
    assert v[5] is not None and v[6] is not None and 0 < v[7] <= 1 and v[8] > 0
    # the MD label, the NPT-equilibrated cell (900 K > NPT_AUTO_T_K, P = 0) and the phase label
    assert mat[:5] == ("snap-distilled-from-emt (not DFT)", "lammps", "fcc Cu (hot)", True, 0.0)
    hand = json.loads((wd / "md" / "npt_handover.json").read_text())
    assert mat[6] == pytest.approx(hand["volume_A3"]) and mat[5] == pytest.approx(hand["density_g_cm3"])
    assert 7.0 < mat[5] < 9.5 and mat[7] == pytest.approx(hand["cell_lengths_A"][0])
    (r,) = rows
    assert r["mlff_flagged"] is False and r["mlff"] == "snap-distilled-from-emt (not DFT)"


@pytest.mark.slow
def test_the_flow_writes_the_held_out_force_parity_beside_mlff_validation(flows) -> None:
    """force_parity (Fig. S1) comes from the validation task: every held-out component of the
    32-atom cell (below the bound), labelled, with the RMSE of the mlff_validation row."""
    from ramanscreen.analytics.db import connect

    con = connect(flows["root"])
    try:
        n, n_frames, methods, rmse = con.execute(
            "SELECT count(*), count(DISTINCT frame), list(DISTINCT method), "
            "sqrt(avg((force_distilled_eV_A - force_teacher_eV_A) ^ 2)) FROM force_parity "
            "WHERE campaign = 'distilled'").fetchone()
        v = con.execute("SELECT force_rmse_eV_A, n_holdout_frames, n_atoms FROM mlff_validation "
                        "WHERE campaign = 'distilled'").fetchone()
    finally:
        con.close()
    assert methods == ["snap-distilled-from-emt (not DFT)"]
    assert n_frames == v[1] and n == 3 * v[1] * v[2]
    assert rmse == pytest.approx(v[0], rel=1e-6)


@pytest.mark.slow
def test_refuse_flagged_refuses_a_flagged_potential_and_the_ranking_flags_it(flows, tmp_path) -> None:
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import ranking
    from ramanscreen.tasks.mlff import FORCE_RMSE_LIMIT_EV_A, load_distilled, validation_rows
    from ramanscreen.tasks.results import write_run

    err = flows["refused"]
    text = str(err)
    assert err.field == "mlff.refuse_flagged" and "hot.toml" in text
    assert "above the 0.1 eV/Å limit" in text and "refuse_flagged = false" in text
    # refused before production: no LAMMPS production run, nothing committed for that campaign
    work = flows["root"] / "work" / "hot" / "Cu"
    (run_dir,) = list(work.iterdir())
    assert (run_dir / "mlff" / "potential").is_dir() and not (run_dir / "md").exists()
    assert not (flows["root"] / "materials" / "campaign=hot").exists()
    # its real validation rows are flagged; committed with a run, the ranking shows the flag
    res = load_distilled(run_dir / "mlff")
    rows = validation_rows("Cu", res.potential, res.data.holdout, species=["Cu"])
    assert rows[0]["flagged"] is True and rows[0]["force_rmse_eV_A"] > FORCE_RMSE_LIMIT_EV_A
    meta = dict(formula="Cu32", temperature_k=6000.0, n_atoms=32, mlff=rows[0]["method"], reference_method="ref",
                n_train=4, mobile_species="Cu")
    write_run(tmp_path, "hot", "Cu", "r1", meta=meta, transport=[{"species": "Cu", "D_cm2_s": 1e-4}],
              mlff_validation=rows)
    con = connect(tmp_path)
    try:
        (r,) = ranking(con, "hot")
        n = con.execute("SELECT count(*) FROM mlff_validation WHERE flagged").fetchone()[0]
    finally:
        con.close()
    assert r["mlff_flagged"] is True and n == 1


def _npt_cells(traj: Path) -> tuple[np.ndarray, list]:
    with AseTrajectory(str(traj)) as tr:
        frames = list(tr)
    return np.array([f.cell.array for f in frames]), frames


def _check_handover(workdir: Path, res, record, s) -> None:
    from ramanscreen.tasks.md import NPT_AVERAGE_FRACTION

    cells, npt_frames = _npt_cells(workdir / "npt" / "md.traj")
    n = len(npt_frames)
    start = min(n - 1, int(n * (1 - NPT_AVERAGE_FRACTION)))
    mean = cells[start:].mean(axis=0)
    with AseTrajectory(str(res.traj_path)) as tr:
        prod = list(tr)
    # production at the mean NPT cell, every frame, fixed
    for f in prod:
        np.testing.assert_allclose(f.cell.array, mean, atol=1e-6)
    assert record["npt"] is True and record["volume_A3"] == pytest.approx(abs(np.linalg.det(mean)), rel=1e-9)
    assert record["handover"]["last_npt_md_step"] == npt_frames[-1].info["md_step"] == s.npt_steps
    # frames at production steps 0, k, 2k, ... once each: no gap, no duplicate
    steps = [f.info["md_step"] for f in prod]
    assert steps == list(range(0, s.steps + 1, s.write_every))
    return prod, npt_frames, mean


def test_npt_then_nvt_handover_in_lammps(tmp_path) -> None:
    """LAMMPS: production starts from the last NPT frame (its fractional coordinates in the mean
    cell) with the NPT velocities carried over."""
    from ramanscreen.flows.stages import lammps_settings
    from ramanscreen.tasks.md import MDSettings, run_npt_then_nvt
    from ramanscreen.tasks.mlff import DistilSettings, SnapSettings, TrainingSettings, distil, run_lammps_md

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    ts = TrainingSettings(teacher=EMT_SPEC, temperature_k=900, pressure_gpa=0.0, dt_fs=5.0, md_steps=100,
                          equil_steps=10, sample_every=4, n_rattled=4, n_strained=6)
    pot = distil(atoms, DistilSettings(training=ts, snap=SnapSettings(twojmax=4, committee_size=2), try_twojmax=()),
                 tmp_path / "mlff").potential
    s = MDSettings(temperature_k=900, dt_fs=5.0, steps=60, equil_steps=0, write_every=3, npt_steps=300,
                   checkpoint_every=30, calculator="snap")
    assert s.npt_first and not MDSettings(temperature_k=300).npt_first

    def run(a, st, wd, carry):
        return run_lammps_md(a, pot, lammps_settings(st, keep_velocities=carry), wd)

    res, record = run_npt_then_nvt(atoms, s, tmp_path / "md", run)
    prod, npt_frames, mean = _check_handover(tmp_path / "md", res, record, s)
    last = npt_frames[-1]
    frac = np.linalg.solve(last.cell.array.T, last.positions.T).T
    expect = frac @ mean
    d = prod[0].positions - expect
    d -= np.round(np.linalg.solve(mean.T, d.T).T) @ mean  # the same point modulo the cell
    assert np.abs(d).max() < 1e-5
    v_last = last.get_velocities()
    np.testing.assert_allclose(prod[0].get_velocities(), v_last - v_last.mean(axis=0), atol=1e-8)
    # rerun: everything is found finished, nothing is rerun
    again, record2 = run_npt_then_nvt(atoms, s, tmp_path / "md", run)
    assert again.metadata["finished_utc"] == res.metadata["finished_utc"] and record2 == record


def test_npt_then_nvt_handover_with_ase(tmp_path) -> None:
    """The ASE engine (MD on the calculator itself): the same hand-over of the cell; ASE draws
    fresh velocities at T for production."""
    from ramanscreen.tasks.md import MDSettings, run_md, run_npt_then_nvt

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    s = MDSettings(temperature_k=300, pressure_gpa=2.0, dt_fs=5.0, steps=20, write_every=2, npt_steps=100,
                   checkpoint_every=50, calculator=EMT_SPEC)
    assert s.npt_first  # P ≠ 0
    res, record = run_npt_then_nvt(atoms, s, tmp_path / "md", lambda a, st, wd, carry: run_md(a, st, wd))
    prod, npt_frames, mean = _check_handover(tmp_path / "md", res, record, s)
    assert record["pressure_gpa"] == 2.0 and record["handover"]["initial_volume_A3"] == pytest.approx(atoms.get_volume())
