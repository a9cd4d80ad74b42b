"""Parity data as results (Figs. 2B/2C and S1): the α model's test-set predictions from the real
fit stage (dipole-model references of real frames, a real λ-SOAP committee) and a real distilled
SNAP's held-out forces against its EMT teacher (real LAMMPS), written by the real write stage to
Parquet, read through the DuckDB views, drawn into the HTML report."""

from __future__ import annotations

import math
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io.trajectory import Trajectory as AseTrajectory
from synthetic_results import write_rattled_nacl

from ramanscreen.analytics.db import connect
from ramanscreen.analytics.html_report import NOT_RECORDED, PARITY_FIGURES, write_html_report
from ramanscreen.flows.stages import fit_task, reference_task, validate_task, write_task
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.parity import COMPONENT_NAMES, force_parity_rows
from ramanscreen.tasks.polarizability import SIX_COMPONENTS, AlphaModel
from ramanscreen.tasks.results import COLUMNS, committed_write_id, run_dir, write_run
from ramanscreen.tasks.spectra import raman_spectrum

EMT_SPEC = "ase:ase.calculators.emt:EMT"
N_FRAMES, N_TRAIN = 24, 16
META = dict(formula="NaCl", temperature_k=300.0, n_atoms=8, mlff="snap-distilled-from-emt (not DFT)",
            reference_method="thole-dipole-model (embedded, not DFPT)", n_train=N_TRAIN, md_production_ps=1.0)
IMG = "data:image/png;base64,"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Rattled NaCl cells as a trajectory, dipole-model references (the reference stage) and the
    fit stage on N_TRAIN of them (the rest are its test frames)."""
    work = tmp_path_factory.mktemp("alpha")
    rng = np.random.default_rng(0)
    traj_path = write_rattled_nacl(work / "md.traj", N_FRAMES, rng)
    frames = list(range(N_FRAMES))
    refs = reference_task.fn("NaCl", str(traj_path), frames, "dipole", {}, [str(work / f"ref{i}") for i in frames],
                             "all")
    fit = fit_task.fn("NaCl", str(traj_path), refs, N_TRAIN, {"cutoff_A": 4.0, "max_radial": 2, "max_angular": 2},
                      2, 3, str(work / "model"))
    return traj_path, refs, fit


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A tiny real distillation (EMT teacher on 32 Cu/Au atoms) and the validate stage on it."""
    from ramanscreen.tasks.mlff.data import TrainingSettings
    from ramanscreen.tasks.mlff.distil import DistilSettings, distil, load_distilled
    from ramanscreen.tasks.mlff.refine import RefineSettings
    from ramanscreen.tasks.mlff.snap import SnapSettings

    work = tmp_path_factory.mktemp("mlff")
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    a[0].symbol = a[9].symbol = "Au"
    ts = TrainingSettings(teacher=EMT_SPEC, temperature_k=800, dt_fs=2.0, md_steps=60, equil_steps=10,
                          sample_every=4, n_rattled=2, n_strained=2)
    res = distil(a, DistilSettings(training=ts, snap=SnapSettings(twojmax=4, cutoff_A=4.5, committee_size=4),
                                   refine=RefineSettings(max_rounds=0)), work / "fit")
    d = {"workdir": str(res.workdir), "potential": str(res.potential.path)}
    validation = validate_task.fn("CuAu", d, ["Cu"], False, str(work / "validation"))
    return load_distilled(d["workdir"], potential=d["potential"]), validation  # the frames the stage read


def _spectrum(seed: int = 0) -> dict:
    a = np.random.default_rng(seed).normal(size=(256, 3, 3))
    return {"spectrum": raman_spectrum(a + a.transpose(0, 2, 1), 10.0), "descriptors": {"frac_below_wc": 0.2}}


def _write(root: Path, fit: dict, material: str = "NaCl", validation: dict | None = None, **meta) -> dict:
    return write_task.fn(str(root), "par", material, "r1", {**META, "formula": material, **meta}, _spectrum(), None, fit,
                         None if validation is None else validation["rows"],
                         force_parity=None if validation is None else validation["force_parity"])


def _rows(root: Path, sql: str) -> list[tuple]:
    con = connect(root)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_alpha_parity_rows_are_the_fit_stages_test_predictions(fitted, tmp_path) -> None:
    traj_path, refs, fit = fitted
    root = tmp_path / "results"
    _write(root, fit)
    rows = _rows(root, "SELECT frame, component, kind, alpha_reference_A3, alpha_predicted_A3, alpha_committee_std_A3, "
                       "reference_method, md_step FROM alpha_parity ORDER BY frame, component")
    test = sorted({r[0] for r in rows})
    assert len(test) == N_FRAMES - N_TRAIN == fit["metrics"]["n_test"] and len(rows) == 6 * len(test)
    train_frames = set(range(N_FRAMES)) - set(test)
    assert len(train_frames) == N_TRAIN  # the test frames are exactly the references not trained on
    # predicted = what the saved model predicts for those frames; reference = the reference stage's α
    with AseTrajectory(str(traj_path)) as traj:
        atoms = [traj[i] for i in test]
    pred = AlphaModel.load(fit["model_path"]).predict(atoms)
    truth = {r["frame"]: np.asarray(r["alpha_A3"]) for r in refs}
    by_name = dict(zip(COMPONENT_NAMES, SIX_COMPONENTS, strict=True))
    for frame, comp, kind, ref, p, std, method, _step in rows:
        i, (r, c) = test.index(frame), by_name[comp]
        assert p == pytest.approx(pred[i, r, c], abs=1e-9, rel=1e-9)
        assert ref == truth[frame][r, c]
        assert kind == ("diagonal" if r == c else "off-diagonal")
        assert std is not None and std >= 0 and method == refs[0]["method"] and "not DFPT" in method
    # RMSE and R² recomputed in SQL from the table = the fit stage's recorded test metrics
    got = dict(_rows(root, "SELECT kind, sqrt(avg((alpha_predicted_A3 - alpha_reference_A3) ^ 2)) FROM alpha_parity "
                           "GROUP BY kind"))
    assert got["diagonal"] == pytest.approx(fit["metrics"]["rmse_diag_A3"], rel=1e-12)
    assert got["off-diagonal"] == pytest.approx(fit["metrics"]["rmse_offdiag_A3"], rel=1e-12)
    recorded = _rows(root, "SELECT rmse_diag_A3, rmse_offdiag_A3, r2_diag FROM ml_metrics")[0]
    assert recorded[:2] == pytest.approx((got["diagonal"], got["off-diagonal"]), rel=1e-12)
    r2 = _rows(root, "SELECT 1 - sum((alpha_predicted_A3 - alpha_reference_A3) ^ 2) / "
                     "sum((alpha_reference_A3 - m) ^ 2) FROM alpha_parity, (SELECT avg(alpha_reference_A3) AS m "
                     "FROM alpha_parity WHERE kind = 'diagonal') WHERE kind = 'diagonal'")[0][0]
    assert r2 == pytest.approx(recorded[2], rel=1e-12)
    assert set(COLUMNS["alpha_parity"]) <= {c[0] for c in _rows(root, "DESCRIBE alpha_parity")}


def test_rerun_and_a_crashed_write_never_duplicate_parity_rows(fitted, distilled, tmp_path) -> None:
    _, _, fit = fitted
    _, validation = distilled
    root = tmp_path / "results"
    first = _write(root, fit, "CuAu", validation)
    n_alpha, n_force = first["rows"]["alpha_parity"], first["rows"]["force_parity"]
    assert n_alpha > 0 and n_force > 0
    count = "SELECT (SELECT count(*) FROM alpha_parity), (SELECT count(*) FROM force_parity)"
    assert _rows(root, count) == [(n_alpha, n_force)]
    # a crashed write: its data files are on disk, its commit never happened
    wid = committed_write_id(root, "par", "CuAu", "r1")
    for table in ("alpha_parity", "force_parity"):
        d = run_dir(root, table, "par", "CuAu", "r1")
        shutil.copy(d / f"{wid}.parquet", d / f"{uuid.uuid4().hex}.parquet")
    assert _rows(root, count) == [(n_alpha, n_force)]
    again = _write(root, fit, "CuAu", validation)  # same content: nothing written
    changed = _write(root, fit, "CuAu", validation, md_production_ps=2.0)  # a new version replaces it
    assert again["write_id"] == wid != changed["write_id"]
    assert _rows(root, count) == [(n_alpha, n_force)]


def test_force_parity_rows_are_the_held_out_forces(distilled, tmp_path) -> None:
    from ramanscreen.tasks.mlff.snap import error_stats, labels

    res, validation = distilled
    pot, holdout = res.potential, res.data.holdout
    root = tmp_path / "results"
    write_run(root, "par", "CuAu", "r1", meta={**META, "formula": "CuAu"}, mlff_validation=validation["rows"],
              force_parity=validation["force_parity"])
    rows = _rows(root, "SELECT frame, atom, element, component, force_teacher_eV_A, force_distilled_eV_A, "
                       "force_rmse_element_eV_A, method, teacher FROM force_parity ORDER BY frame, atom, component")
    n_all = sum(3 * len(a) for a in holdout)
    assert len(rows) == n_all <= 5000  # small enough to keep every component
    predicted = pot.predict(holdout)
    xyz = "xyz"
    for frame, atom, el, comp, ft, fd, _rmse, method, _teacher in rows[::7]:
        assert ft == labels(holdout[frame])[1][atom, xyz.index(comp)]
        assert fd == pytest.approx(predicted[frame].get_forces()[atom, xyz.index(comp)], abs=1e-9)
        assert el == holdout[frame].get_chemical_symbols()[atom]
        assert method == pot.method == "snap-distilled-from-emt (not DFT)"
    total = _rows(root, "SELECT sqrt(avg((force_distilled_eV_A - force_teacher_eV_A) ^ 2)) FROM force_parity")[0][0]
    assert total == pytest.approx(validation["rows"][0]["force_rmse_eV_A"], rel=1e-6)
    by_el = error_stats(pot, holdout).force_rmse_by_element_eV_A
    for el, rmse in _rows(root, "SELECT element, any_value(force_rmse_element_eV_A) FROM force_parity GROUP BY 1"):
        assert rmse == pytest.approx(by_el[el], rel=1e-6)
    # beyond the bound: a deterministic subsample that keeps every element, with the full-set RMSE
    small = force_parity_rows(pot, holdout, max_rows=60)
    assert len(small["frame"]) == 60 and small == force_parity_rows(pot, holdout, max_rows=60)
    assert set(small["element"]) == {"Cu", "Au"}
    full = {(f, a, c): v for f, a, c, v in zip(*(validation["force_parity"][k] for k in
                                                  ("frame", "atom", "component", "force_distilled_eV_A")), strict=True)}
    assert all(full[(f, a, c)] == v for f, a, c, v in zip(small["frame"], small["atom"], small["component"],
                                                           small["force_distilled_eV_A"], strict=True))
    for el, rmse in zip(small["element"], small["force_rmse_element_eV_A"], strict=True):
        assert math.isclose(rmse, by_el[el], rel_tol=1e-6)


def test_bad_parity_rows_write_nothing(tmp_path) -> None:
    root = tmp_path / "results"
    good = {"frame": [0], "component": ["xy"], "kind": ["off-diagonal"], "alpha_reference_A3": [1.0],
            "alpha_predicted_A3": [1.1], "reference_method": ["thole-dipole-model (embedded, not DFPT)"]}
    for bad, field in (({**good, "kind": ["diagonal"]}, "alpha_parity.kind"),
                       ({**good, "component": ["xq"]}, "alpha_parity.component"),
                       ({k: v * 2 for k, v in good.items()}, "alpha_parity.component"),
                       ({**good, "reference_method": [None]}, "alpha_parity.reference_method")):
        with pytest.raises(InputError) as err:
            write_run(root, "par", "X", "r1", meta=META, alpha_parity=bad)
        assert err.value.field == field
    assert not root.exists() or not any(root.rglob("*.parquet"))


def _not_in_report(text: str) -> str:
    return text.split("<h2>Not in this report</h2>", 1)[1]


def test_report_draws_the_parity_figures_when_recorded_and_lists_them_when_not(fitted, distilled, tmp_path) -> None:
    _, _, fit = fitted
    _, validation = distilled
    root = tmp_path / "results"
    _write(root, fit, "CuAu", validation)
    # a run written without parity data (no fit parity, MD on the calculator itself)
    write_run(root, "par", "Plain", "r1", meta={**META, "formula": "Plain", "mlff": "chgnet"},
              spectrum={"freq_cm1": [0.0, 10.0, 20.0, 100.0], "intensity": [0.0, 3.0, 1.0, 1.0]},
              transport=[{"species": "Na", "D_cm2_s": 1e-5}])
    text = write_html_report(root, "par").read_text()
    captions = re.findall(r'<img src="(data:image/png;base64,[^"]+)" alt="([^"]*)"', text)
    alpha = [c for uri, c in captions if "α parity (Fig. 2B/2C equivalent)" in c]
    force = [c for uri, c in captions if "force parity (Fig. S1 equivalent)" in c]
    assert len(alpha) == 1 and alpha[0].startswith("CuAu") and "not DFPT" in alpha[0]
    m = fit["metrics"]
    assert f"RMSE {m['rmse_diag_A3']:.3g} Å³" in alpha[0] and f"R² {m['r2_offdiag']:.3f}" in alpha[0]
    assert len(force) == 1 and "snap-distilled-from-emt (not DFT)" in force[0] and "not DFT" in force[0]
    assert f"RMSE {validation['rows'][0]['force_rmse_eV_A']:.3f} eV/Å over all components" in force[0]
    assert "Cu " in force[0] and "Au " in force[0]
    # the images decode as PNGs
    import base64
    import io

    from PIL import Image

    for uri, c in captions:
        if c in alpha + force:
            img = Image.open(io.BytesIO(base64.b64decode(uri[len(IMG):])))
            assert img.format == "PNG" and img.size[0] > 300
    missing = _not_in_report(text)
    for fig, _why in PARITY_FIGURES.values():
        assert re.search(rf"{re.escape(fig)}: needs [^<]*; not recorded by Plain</li>", missing), fig
    for fig, _why in NOT_RECORDED:
        assert fig in missing
    assert "Fig. 2D ML vs reference spectrum" in missing

    # every run with the data: the parity figures leave "Not in this report"
    only = tmp_path / "only"
    _write(only, fit, "CuAu", validation)
    missing = _not_in_report(write_html_report(only, "par").read_text())
    assert all(fig not in missing for fig, _ in PARITY_FIGURES.values())
    assert "Fig. 2D ML vs reference spectrum" in missing
