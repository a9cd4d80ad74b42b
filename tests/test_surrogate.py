"""GP surrogate: descriptors, bad input, censored values, CV metrics, save/load, the CLI and a
results root read through DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from ramanscreen.tasks import surrogate as sg
from ramanscreen.tasks.common import InputError

FAST = sg.SurrogateSettings(n_trials=4, cv_folds=3, families=("rbf", "matern2.5"), allow_ard=False)


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True, cwd=cwd)


def _synthetic_csv(path: Path, extra_rows: list[str] = ()) -> Path:
    """Arrhenius-like σ of Li(7-x)La3Zr(2-x)Ta(x)O12 (synthetic, for the machinery only)."""
    lines = ["formula,temperature_k,pressure_gpa,sigma_S_cm"]
    for x in (0.0, 0.25, 0.5, 0.75, 1.0):
        for t in (300.0, 400.0, 500.0):
            f = f"Li{7 - x:g}La3Zr{2 - x:g}Ta{x:g}O12".replace("Ta0O", "O").replace("Zr1La", "ZrLa")
            ea = 0.45 - 0.1 * x
            lines.append(f"{f},{t},0.1,{10 ** (2.0 - ea / (2.303 * 8.617e-5 * t)):.6e}")
    path.write_text("\n".join([*lines, *extra_rows]) + "\n")
    return path


def test_descriptors_are_documented_statistics():
    f = sg.composition_features("Li7La3Zr2O12")
    # fractions sum to 1, and the fraction-weighted mean oxidation state of a neutral compound is 0
    assert sum(v for k, v in f.items() if k.startswith("frac_")) == pytest.approx(1.0)
    assert f["mean_oxidation_state"] == pytest.approx(0.0, abs=1e-9)
    assert f["min_oxidation_state"] == -2 and f["max_oxidation_state"] == 4
    # Pauling electronegativities: Li 0.98, O 3.44
    assert f["min_electronegativity"] == pytest.approx(0.98) and f["max_electronegativity"] == pytest.approx(3.44)
    mass = (7 * 6.94 + 3 * 138.905 + 2 * 91.224 + 12 * 15.999) / 24
    assert f["mean_atomic_mass"] == pytest.approx(mass, rel=1e-3)
    names = sg.feature_names(["Li", "O", "Zr", "La"])
    assert names[-2:] == ["inv_temperature_1000_k", "pressure_gpa"] and len(names) == 4 + 16 + 2


def test_oxidation_states_of_doped_and_sulfide():
    assert sg.oxidation_states("Na2.9Sb0.9W0.1S4") == {"Na": 1.0, "Sb": 5.0, "W": 6.0, "S": -2.0}
    assert sg.oxidation_states("Li6.4La3Zr1.4Ta0.6O12")["Ta"] == 5.0


def test_bad_target_value_is_one_line_naming_row_and_column(tmp_path):
    csv = _synthetic_csv(tmp_path / "t.csv", ["Li7La3Zr2O12,300,0,abc"])
    table = sg.read_property_table(csv)
    with pytest.raises(InputError) as exc:
        sg.fit_surrogate(table, "sigma_S_cm", FAST)
    msg = str(exc.value)
    assert "t.csv" in msg and "sigma_S_cm" in msg and "row 16 (line 17)" in msg and "\n" not in msg
    csv2 = _synthetic_csv(tmp_path / "u.csv", ["Li7La3Zr2O12,300,0,-1e-4"])
    with pytest.raises(InputError, match="not positive"):
        sg.fit_surrogate(sg.read_property_table(csv2), "sigma_S_cm", FAST)
    r = _cli("surrogate", "fit", str(csv), "--target", "sigma_S_cm", "--out", str(tmp_path / "m.joblib"), "--n-trials", "2")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "line 17" in r.stderr
    assert not list(tmp_path.glob("m.*"))


def test_censored_values_are_counted_and_reported(tmp_path):
    csv = _synthetic_csv(tmp_path / "t.csv", ["Li7La3Zr2O12,250,0.1,<1E-10", "Li6La3Zr1TaO12,600,0.1,>1e-3",
                                              "Li6.5La3Zr1.5Ta0.5O12,350,0.1,"])
    table = sg.read_property_table(csv)
    with pytest.warns(UserWarning, match="2 censored"):
        model, report = sg.fit_surrogate(table, "sigma_S_cm", FAST)
    assert report.metrics["n"] == 15 and report.metrics["n_censored"] == 2 and report.metrics["n_missing"] == 1
    kinds = report.table["censored"]
    assert kinds.count("<") == 1 and kinds.count(">") == 1
    # the bound check is a real comparison of the prediction with the bound
    i = kinds.index("<")
    assert report.table["bound_satisfied"][i] == (report.table["prediction"][i] <= -10.0)


def test_fit_recovers_arrhenius_and_is_calibrated(tmp_path):
    table = sg.read_property_table(_synthetic_csv(tmp_path / "t.csv"))
    model, report = sg.fit_surrogate(table, "sigma_S_cm", sg.SurrogateSettings(n_trials=6, cv_folds=5, families=("rbf", "matern2.5")))
    cv = report.metrics
    assert cv["n_folds"] == 5 and cv["n_compositions"] == 5
    # a smooth Arrhenius surface: held-out compositions predicted to well under 0.3 decades
    assert cv["rmse"] < 0.3, cv
    assert 0.0 <= cv["within_1sigma"] <= cv["within_2sigma"] <= 1.0
    mean, std = model.predict(["Li6.6La3Zr1.6Ta0.4O12"], [450.0], [0.1])
    truth = 2.0 - (0.45 - 0.04) / (2.303 * 8.617e-5 * 450.0)
    assert abs(mean[0] - truth) < 3 * std[0] + 0.1 and std[0] > 0


def test_save_load_roundtrip_and_version_refusal(tmp_path):
    table = sg.read_property_table(_synthetic_csv(tmp_path / "t.csv"))
    model, report = sg.fit_surrogate(table, "sigma_S_cm", FAST)
    d = sg.save_model(model, tmp_path / "sigma.joblib", report)
    for name in ("sigma.joblib", "sigma.json", "sigma.cv.csv", "sigma.trials.csv", "sigma.parity.png"):
        assert (tmp_path / name).is_file(), name
    info = json.loads((tmp_path / "sigma.json").read_text())
    assert info["target"] == "sigma_S_cm" and info["transform"] == "log10" and "scikit-learn" in info["versions"]
    assert set(info["cv"]) >= {"mae", "rmse", "within_1sigma", "within_2sigma"}
    back = sg.load_model(d)
    m1, s1 = model.predict(["Li7La3Zr2O12"], [350.0], [0.0])
    m2, s2 = back.predict(["Li7La3Zr2O12"], [350.0], [0.0])
    np.testing.assert_allclose([m1, s1], [m2, s2])
    info["versions"]["scikit-learn"] = "0.1.0"
    (tmp_path / "sigma.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="scikit-learn 0.1.0"):
        sg.load_model(d)
    info["format_version"] = 99
    (tmp_path / "sigma.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="format version 99"):
        sg.load_model(d)


def test_cli_fit_and_predict_on_shipped_literature_data(tmp_path):
    data = sg.dataset_path()
    assert data.is_file()
    r = _cli("surrogate", "fit", str(data), "--target", "sigma_S_cm", "--out", str(tmp_path / "m.joblib"), "--n-trials", "4",
             "--cv-folds", "3")
    assert r.returncode == 0, r.stderr
    assert "CV RMSE" in r.stdout and "1 of 10 rows have no value" in r.stderr
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["cv"]["n"] == 9 and info["cv"]["n_compositions"] == 8
    query = tmp_path / "q.csv"
    query.write_text("formula,temperature_k\nLi6.4La3Zr1.4Ta0.6O12,298\nNa3SbS4,298\n")
    r = _cli("surrogate", "predict", str(tmp_path / "m.joblib"), str(query), "--out", str(tmp_path / "p.csv"))
    assert r.returncode == 0, r.stderr
    assert "no 'pressure_gpa' column" in r.stdout
    pred = pacsv.read_csv(tmp_path / "p.csv").to_pydict()
    assert pred["log10_sigma_S_cm_std"][0] > 0 and pred["sigma_S_cm_lo95"][0] < pred["sigma_S_cm"][0] < pred["sigma_S_cm_hi95"][0]
    assert "Ta" in r.stderr  # Ta is not in the training set: said, not hidden


def test_results_root_through_sql_views(tmp_path):
    from ramanscreen.tasks.results import write_run

    root = tmp_path / "results"
    for i, (f, t, d) in enumerate([("Na3SbS4", 300, 2e-8), ("Na3PS4", 600, 1e-6), ("AgI", 500, 2e-5),
                                   ("Na3SbS4", 600, 5e-7), ("AgI", 400, 8e-6)]):
        write_run(root, "demo", f.replace("3", "_3"), f"r{i}", meta=dict(formula=f, temperature_k=float(t), n_atoms=64,
                  mlff="chgnet", reference_method="embedded", n_train=10, mobile_species=f[:2] if f != "AgI" else "Ag"),
                  transport=[{"species": f[:2] if f != "AgI" else "Ag", "D_cm2_s": d}])
    table = sg.read_property_table(root)
    assert len(table) == 5 and (table.pressure_gpa == 0).all()
    assert any("0 GPa" in n for n in table.notes) and any("not DFT" in n for n in table.notes)
    model, report = sg.fit_surrogate(table, "D_cm2_s", sg.SurrogateSettings(n_trials=2, cv_folds=3))
    assert model.transform == "log10" and report.metrics["n"] == 5
