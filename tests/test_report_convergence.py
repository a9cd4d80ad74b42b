"""The HTML report's convergence part (Figs. S5–S12 and the Fig. 2A learning curve): drawn from
real ``convergence`` rows and ``convergence_spectra`` written by the real writer and computed by
the real convergence code; a run without them lists the figures under "Not in this report"."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest

from ramanscreen.analytics.html_report import CONVERGENCE_FIGURES, NOT_RECORDED, write_html_report
from ramanscreen.tasks.convergence import convergence_study
from ramanscreen.tasks.results import write_run
from ramanscreen.tasks.spectra import SpectrumSettings, raman_spectrum

DT_FS = 10.0
SETTINGS = SpectrumSettings(omega_min_cm1=20.0, omega_c_cm1=100.0, host_window_cm1=(100.0, 1000.0))
META = dict(formula="AgI", temperature_k=500.0, n_atoms=64, mlff="snap-distilled-from-chgnet (not DFT)",
            reference_method="thole-dipole-model (embedded, not DFPT)", n_train=140, mobile_species="Ag",
            md_dt_fs=1.0, md_production_ps=40.96, alpha_stride=10, omega_min_cm1=20.0, omega_c_cm1=100.0,
            host_low_cm1=100.0, host_high_cm1=1000.0)
#: Test RMSE of the refits and of the model (fraction -> metrics), as fit_training_subsets returns them.
METRICS = {0.25: {"rmse_diag_A3": 0.91, "rmse_offdiag_A3": 0.47},
           0.5: {"rmse_diag_A3": 0.62, "rmse_offdiag_A3": 0.33},
           1.0: {"rmse_diag_A3": 0.41, "rmse_offdiag_A3": 0.21}}
IMG = "data:image/png;base64,"


def _alpha(n: int = 4096, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3, 3))
    return a + a.transpose(0, 2, 1)


def _write(root: Path, material: str, *, convergence: bool = True, test_metrics=METRICS):
    alpha = _alpha()
    spec = raman_spectrum(alpha, DT_FS, **SETTINGS.spectrum_kwargs())
    kwargs = dict(meta={**META, "formula": material}, spectrum={"freq_cm1": spec.freq_cm1, "intensity": spec.intensity},
                  transport=[{"species": "Ag", "D_cm2_s": 2.5e-5}],
                  ml_metrics=dict(r2_diag=0.9, r2_offdiag=0.8, rmse_diag_A3=0.41, rmse_offdiag_A3=0.21))
    if convergence:
        noise = np.random.default_rng(1).normal(size=alpha.shape)
        subsets = {0.25: alpha + 0.8 * _alpha(seed=2), 0.5: alpha + 0.3 * (noise + noise.transpose(0, 2, 1))}
        res = convergence_study(alpha, DT_FS, settings=SETTINGS, mobile="Ag", d_full_cm2_s=2.5e-5,
                                subset_alpha_A3=subsets, n_train=140, test_metrics=test_metrics)
        kwargs.update(convergence=res.rows, convergence_spectra=res.spectra_table())
    write_run(root, "conv", material, "r1", **kwargs)


def _not_in_report(text: str) -> str:
    return text.split("<h2>Not in this report</h2>", 1)[1]


def _captions(text: str) -> list[str]:
    return re.findall(r"<figcaption>(.*?)</figcaption>", text)


def test_report_draws_the_convergence_figures_table_and_flag(tmp_path: Path) -> None:
    root = tmp_path / "results"
    _write(root, "AgI")
    text = write_html_report(root, "conv").read_text()
    # spectrum, VDOS?, MSD? — none stored but the spectrum; plus S5–S8, S9–S12 and the learning curve
    assert text.count(IMG) == 1 + 3
    caps = _captions(text)
    training = [c for c in caps if "Figs. S5–S8 equivalent" in c]
    length = [c for c in caps if "Figs. S9–S12 equivalent" in c]
    curve = [c for c in caps if "Fig. 2A / S4 equivalent" in c]
    assert len(training) == len(length) == len(curve) == 1
    # the changes of the ¼ and ½ subsets are in the captions, with the provenance of α
    assert "¼ N_T (35): spectrum L2 change" in training[0] and "½ N_T (70): spectrum L2 change" in training[0]
    assert "first ¼ (10.2 ps): spectrum L2 change" in length[0] and "first ½ (20.5 ps)" in length[0]
    assert "not DFPT" in training[0] and "not DFT" in length[0]
    # the learning curve's caption names every RMSE, and nothing is omitted
    for n, f in ((35, 0.25), (70, 0.5), (140, 1.0)):
        m = METRICS[f]
        assert f"N_T = {n}: diagonal {m['rmse_diag_A3']:.3g}, off-diagonal {m['rmse_offdiag_A3']:.3g} Å³" in curve[0]
    assert "omitted" not in curve[0]
    # the convergence table (six rows: two tests × three fractions) and the ranking's flag
    table = text.split("<h4>Convergence</h4>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + 6
    assert "trajectory_length" in table and "training_set" in table and "0.91" in table and "+0.00e+00" in table
    assert re.search(r"converged \(ranking, checked at ½ the trajectory and ½ N_T\): (yes|no) — \S", text)
    # with the data present, "Not in this report" keeps only what is truly missing
    rest = _not_in_report(text)
    for fig, why in NOT_RECORDED:
        assert html.escape(f"{fig}: needs {why}") in rest
    for fig, _why in CONVERGENCE_FIGURES.values():
        assert fig not in rest
    assert "learning curve" not in rest.lower()


def test_the_l2_change_in_the_caption_is_the_stored_one(tmp_path: Path) -> None:
    import duckdb

    root = tmp_path / "results"
    _write(root, "AgI")
    text = write_html_report(root, "conv").read_text()
    con = duckdb.connect()
    rows = con.execute(f"SELECT test, fraction, spectrum_l2_change, cp_fraction_change FROM read_parquet("
                       f"'{root}/convergence/*/*/*/*.parquet') WHERE fraction < 1 ORDER BY test, fraction").fetchall()
    assert len(rows) == 4
    for _test, _f, l2, dcp in rows:
        assert l2 > 0
        assert f"spectrum L2 change {l2:.3g}, cp_fraction change {dcp:+.3g}" in text


def test_a_run_without_convergence_data_lists_the_figures_as_missing(tmp_path: Path) -> None:
    root = tmp_path / "results"
    _write(root, "AgI")
    _write(root, "Old", convergence=False)
    text = write_html_report(root, "conv").read_text()
    assert text.count(IMG) == 2 + 3  # two spectra; the convergence figures of AgI only
    rest = _not_in_report(text)
    for fig, why in CONVERGENCE_FIGURES.values():
        assert html.escape(f"{fig}: needs {why}; not recorded by Old") + "</li>" in rest
    assert "Old: spectra of the α model refitted on ¼, ½ and all of N_T (Figs. S5–S8 equivalent): not recorded" in text
    assert "converged (ranking, checked at ½ the trajectory and ½ N_T): — — no convergence data" in text


@pytest.mark.parametrize("metrics", [None, {0.5: METRICS[0.5], 1.0: METRICS[1.0]}], ids=["all-null", "quarter-null"])
def test_null_rmse_values_are_omitted_and_said_so(tmp_path: Path, metrics) -> None:
    root = tmp_path / "results"
    _write(root, "AgI", test_metrics=metrics)
    text = write_html_report(root, "conv").read_text()
    curve = [c for c in _captions(text) if "Fig. 2A / S4 equivalent" in c]
    rest = _not_in_report(text)
    if metrics is None:  # no point at all: no figure, and the curve is listed as missing for this run
        assert text.count(IMG) == 1 + 2 and not curve
        assert "AgI: learning curve (Fig. 2A / S4 equivalent): not recorded by this run" in text
        assert "Fig. 2A / S4 learning curves: needs test RMSE" in rest and "not recorded by AgI" in rest
    else:  # the ¼ point is left out and the caption says so
        assert text.count(IMG) == 1 + 3 and len(curve) == 1
        assert "N_T = 35: diagonal —, off-diagonal — Å³" in curve[0]
        assert "omitted (RMSE null): diagonal at N_T = 35; off-diagonal at N_T = 35" in curve[0]
        assert "N_T = 70: diagonal 0.62, off-diagonal 0.33 Å³" in curve[0]
        assert "Fig. 2A / S4" not in rest
