"""Fig. 2D as data: the ML-predicted against the reference spectrum of the same α frames
(``tasks.convergence.compare_reference_spectrum``), the stage task on real dipole-model
references of real frames and a prediction chunk file, the ``reference_spectrum`` table through
the writer and DuckDB, the figure in the HTML report, and the ``[reference] series_frames`` setting."""

from __future__ import annotations

import re

import numpy as np
import pytest
from synthetic_results import write_rattled_nacl

from ramanscreen.analytics.db import connect
from ramanscreen.analytics.html_report import NOT_RECORDED, REFERENCE_FIGURES, write_html_report
from ramanscreen.flows.stages import reference_spectrum_task, reference_task
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.convergence import compare_reference_spectrum, spectrum_l2_change
from ramanscreen.tasks.reference import ReferenceSettings, default_series_frames
from ramanscreen.tasks.results import write_run
from ramanscreen.tasks.spectra import SpectrumSettings, raman_spectrum, window_fraction

SETTINGS = SpectrumSettings(omega_min_cm1=250.0, omega_c_cm1=600.0, host_window_cm1=(600.0, 1500.0))
DT_FS, N_SERIES = 10.0, 32
META = dict(formula="NaCl", temperature_k=300.0, n_atoms=8, mlff="chgnet", n_train=8, md_production_ps=1.0,
            reference_method="thole-dipole-model (embedded, not DFPT)", omega_min_cm1=250.0, omega_c_cm1=600.0,
            host_low_cm1=600.0, host_high_cm1=1500.0)
FIG = REFERENCE_FIGURES["reference_spectrum"][0]


def _series(n: int = 512, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, 3, 3))
    return a + a.transpose(0, 2, 1)


def test_identical_series_give_zero_l2_and_equal_cp_fraction() -> None:
    a = _series()
    res = compare_reference_spectrum(a, a.copy(), DT_FS, reference_method="ref", settings=SETTINGS)
    assert res.l2_difference == 0.0 and res.l2_shape_difference == 0.0
    assert res.cp_fraction_ml == res.cp_fraction_reference and 0.0 < res.cp_fraction_ml < 1.0
    np.testing.assert_array_equal(res.intensity_ml, res.intensity_reference)
    assert res.n_frames == 512 and res.duration_ps == pytest.approx(5.12) and res.note is None


@pytest.mark.parametrize("c", [0.5, 1.1, 2.0])
def test_a_scaled_series_has_l2_c_squared_minus_one_and_the_same_shape(c: float) -> None:
    a = _series(seed=1)
    res = compare_reference_spectrum(c * a, a, DT_FS, reference_method="ref", settings=SETTINGS)
    assert res.l2_difference == pytest.approx(abs(c * c - 1.0), rel=1e-10)
    assert res.l2_shape_difference == pytest.approx(0.0, abs=1e-10)
    assert res.cp_fraction_ml == pytest.approx(res.cp_fraction_reference, rel=1e-10)
    np.testing.assert_allclose(res.intensity_ml, c * c * res.intensity_reference, rtol=1e-10, atol=1e-300)
    # the reference has unit area over the cp_fraction window
    f = res.freq_cm1
    sel = (f >= 250.0) & (f <= 1500.0)
    assert np.trapezoid(res.intensity_reference[sel], f[sel]) == pytest.approx(1.0)


def test_a_different_series_is_measured_against_its_own_spectra() -> None:
    a, b = _series(seed=2), _series(seed=3)
    res = compare_reference_spectrum(b, a, DT_FS, reference_method="ref", settings=SETTINGS)
    ref, ml = raman_spectrum(a, DT_FS, **SETTINGS.spectrum_kwargs()), raman_spectrum(b, DT_FS, **SETTINGS.spectrum_kwargs())
    assert res.l2_shape_difference == pytest.approx(spectrum_l2_change(ref, ml.freq_cm1, ml.intensity,
                                                                       omega_min_cm1=250.0,
                                                                       host_window_cm1=(600.0, 1500.0)))
    assert res.l2_difference > 0.05
    cp = window_fraction(ref.freq_cm1, np.stack([ml.intensity, ref.intensity]), **SETTINGS.descriptor_kwargs())
    assert (res.cp_fraction_ml, res.cp_fraction_reference) == pytest.approx(tuple(cp))


def test_mismatched_or_too_short_series_are_refused() -> None:
    a = _series(64)
    with pytest.raises(InputError) as err:
        compare_reference_spectrum(a[:60], a, DT_FS, reference_method="ref", settings=SETTINGS)
    assert err.value.field == "reference_alpha_A3"
    with pytest.raises(InputError):
        compare_reference_spectrum(a[:8], a[:8], DT_FS, reference_method="ref", settings=SETTINGS)
    # coarse but long enough: computed, with the reason in the note
    coarse = compare_reference_spectrum(a[:20], a[:20], DT_FS, reference_method="ref", settings=SETTINGS)
    assert coarse.note and "α samples" in coarse.note and coarse.l2_difference == 0.0


def test_series_frames_defaults_by_backend_and_is_validated() -> None:
    assert default_series_frames("dipole") == 128
    assert default_series_frames("cp2k") == default_series_frames("qe") == 0
    assert ReferenceSettings().n_series_frames == 128
    assert ReferenceSettings(backend="qe").n_series_frames == 0
    assert ReferenceSettings(backend="cp2k", series_frames=4).n_series_frames == 4
    assert ReferenceSettings(series_frames=3).series(n_stored=50, alpha_stride=5) == [0, 5, 10]
    with pytest.raises(InputError) as err:
        ReferenceSettings(series_frames=-1)
    assert err.value.field == "series_frames"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Real dipole-model references of N_SERIES rattled NaCl frames (the reference stage), a
    prediction chunk holding a perturbed copy as the 'ML' α (the predict stage's file format,
    with more samples than the series), and the reference-spectrum stage on both."""
    work = tmp_path_factory.mktemp("refspec")
    rng = np.random.default_rng(0)
    traj_path = write_rattled_nacl(work / "md.traj", N_SERIES + 8, rng)
    frames = list(range(N_SERIES))
    refs = reference_task.fn("NaCl", str(traj_path), frames, "dipole", {}, [str(work / f"ref{i}") for i in frames],
                             "series")
    ref_alpha = np.array([r["alpha_A3"] for r in refs])
    ml_alpha = np.concatenate([ref_alpha * 1.05 + rng.normal(0, 0.02, ref_alpha.shape), np.zeros((8, 3, 3))])
    ml_alpha = 0.5 * (ml_alpha + ml_alpha.transpose(0, 2, 1))
    chunk = work / "chunk.npz"
    np.savez(chunk, alpha_A3=ml_alpha, committee_A3=np.zeros((0, len(ml_alpha), 3, 3)),
             subsets_A3=np.zeros((0, len(ml_alpha), 3, 3)), dt_fs=np.float64(DT_FS))
    res = reference_spectrum_task.fn("NaCl", [{"path": str(chunk), "sha256": "x", "n": len(ml_alpha)}], refs, frames,
                                     DT_FS, {"omega_min_cm1": 250.0, "omega_c_cm1": 600.0,
                                             "host_window_cm1": (600.0, 1500.0)})
    return ref_alpha, ml_alpha[:N_SERIES], res


def test_the_stage_compares_the_first_alpha_samples_with_their_references(compared) -> None:
    ref_alpha, ml_alpha, res = compared
    direct = compare_reference_spectrum(ml_alpha, ref_alpha, DT_FS, reference_method="x", settings=SETTINGS)
    t = res["table"]
    np.testing.assert_allclose(t["intensity_reference"], direct.intensity_reference)
    np.testing.assert_allclose(t["intensity_ml"], direct.intensity_ml)
    assert res["l2_difference"] == pytest.approx(direct.l2_difference) and res["n_frames"] == N_SERIES
    assert set(t["reference_method"]) == {"thole-dipole-model (embedded, not DFPT)"}
    assert set(t["first_frame"]) == {0} and set(t["frame_stride"]) == {1}


def test_the_table_is_written_once_per_run_and_the_report_draws_fig_2d(compared, tmp_path) -> None:
    _, _, res = compared
    root = tmp_path / "results"
    spectrum = {"freq_cm1": [0.0, 300.0, 500.0, 900.0], "intensity": [0.0, 3.0, 1.0, 1.0]}
    for _ in range(2):  # a re-run replaces the rows
        write_run(root, "rs", "NaCl", "r1", meta=META, spectrum=spectrum, transport=[{"species": "Na", "D_cm2_s": 1e-5}],
                  reference_spectrum=res["table"])
    con = connect(root)
    try:
        n, runs, l2, cp_ml = con.execute("SELECT count(*), count(DISTINCT run_id), any_value(l2_difference), "
                                         "any_value(cp_fraction_ml) FROM reference_spectrum").fetchone()
    finally:
        con.close()
    assert n == len(res["table"]["freq_cm1"]) and runs == 1
    assert l2 == pytest.approx(res["l2_difference"]) and cp_ml == pytest.approx(res["cp_fraction_ml"])

    only = write_html_report(root, "rs").read_text()
    captions = re.findall(r'<img src="(data:image/png;base64,[^"]+)" alt="([^"]*)"', only)
    fig2d = [c for _, c in captions if "(Fig. 2D equivalent)" in c]
    assert len(fig2d) == 1 and fig2d[0].startswith("NaCl")
    assert "reference: thole-dipole-model (embedded, not DFPT)" in fig2d[0]
    assert f"L2 difference {res['l2_difference']:.3g}" in fig2d[0]
    assert f"cp_fraction ML {res['cp_fraction_ml']:.3g}, reference {res['cp_fraction_reference']:.3g}" in fig2d[0]
    assert FIG not in only.split("<h2>Not in this report</h2>", 1)[1]
    assert all(FIG not in f for f, _ in NOT_RECORDED)

    # a run without a reference α series: listed under "Not in this report", naming it
    write_run(root, "rs", "Plain", "r1", meta={**META, "formula": "Plain"}, spectrum=spectrum,
              transport=[{"species": "Na", "D_cm2_s": 1e-5}])
    text = write_html_report(root, "rs").read_text()
    missing = text.split("<h2>Not in this report</h2>", 1)[1]
    assert re.search(rf"{re.escape(FIG)}: needs [^<]*; not recorded by Plain</li>", missing)
    assert len([c for c in re.findall(r'alt="([^"]*)"', text) if "(Fig. 2D equivalent)" in c]) == 1
