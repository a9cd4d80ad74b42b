"""Experimental spectra: real files in every format (text variants, JCAMP-DX AFFN and DIFDUP,
SPC from spc-io's writer and byte-exact per the Galactic spec, a WiRE .wdf byte-exact per the
renishawWiRE layout), malformed files, processing, and the comparison."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pytest

from ramanscreen.tasks import experiment as ex
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.peaks import gaussian

X = np.linspace(100.0, 1000.0, 901)


def _llzo_like(x: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """Three Gaussian bands (synthetic) on a fluorescence-like sloped background."""
    return (gaussian(x, 300.0, 250.0 + shift, 8.0) + gaussian(x, 500.0, 370.0 + shift, 10.0)
            + gaussian(x, 900.0, 640.0 + shift, 12.0))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True)


@pytest.mark.parametrize("sep,header,comment", [(",", True, "#"), ("\t", False, "%"), (" ", True, "//"), (";", False, "#")])
def test_text_variants(tmp_path, sep, header, comment):
    y = _llzo_like(X)
    lines = [f"{comment} exported by a spectrometer", f"{comment} 532 nm"]
    if header:
        lines.append(sep.join(["Raman shift", "counts"]) if sep != " " else "shift counts")
    for a, b in zip(X[::-1], y[::-1], strict=True):  # descending, as many instruments write
        text = f"{a:.3f}{sep}{b:.6f}"
        lines.append(text.replace(".", ",") if sep == ";" else text)
    p = tmp_path / "s.txt"
    p.write_text("\n".join(lines) + "\n")
    s = ex.read_spectrum(p)
    np.testing.assert_allclose(s.freq_cm1, X, atol=1e-3)
    np.testing.assert_allclose(s.intensity, y, atol=1e-5)


def test_malformed_files_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("shift,counts\n100,1\n101,2\n102,oops\n103,1\n104,1\n")
    with pytest.raises(InputError, match="line 4"):
        ex.read_spectrum(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("100,1\n101,2\n101,3\n103,1\n104,1\n")
    with pytest.raises(InputError, match="appears twice"):
        ex.read_spectrum(dup)
    short = tmp_path / "short.jdx"
    short.write_text("##TITLE=x\n##JCAMP-DX=4.24\n##XUNITS=1/CM\n##FIRSTX=100\n##LASTX=110\n##NPOINTS=11\n"
                     "##XYDATA=(X++(Y..Y))\n100 1 2 3\n##END=\n")
    with pytest.raises(InputError, match="NPOINTS=11"):
        ex.read_spectrum(short)
    junk = tmp_path / "junk.spc"
    junk.write_bytes(b"\x00\x4b" + b"\xff" * 40)
    r = _cli("experiment", "import", str(junk), "--out", str(tmp_path / "o.csv"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "junk.spc" in r.stderr
    assert not (tmp_path / "o.csv").exists()
    r = _cli("experiment", "import", str(tmp_path / "x.foo"), "--out", str(tmp_path / "o.csv"))
    assert r.returncode == 2


def test_jcamp_affn_and_difdup_roundtrip(tmp_path):
    y = _llzo_like(X)
    a = ex.write_jcamp(tmp_path / "a.jdx", X, y, form="affn")
    d = ex.write_jcamp(tmp_path / "d.jdx", X, y, form="difdup")
    text = d.read_text()
    assert any(c in text for c in "JKLMNOPQRjklmnopqr") and "S" in text.split("##XYDATA")[1]  # really compressed
    sa, sd = ex.read_spectrum(a), ex.read_spectrum(d)
    np.testing.assert_allclose(sa.freq_cm1, X)
    np.testing.assert_allclose(sd.intensity, sa.intensity)
    np.testing.assert_allclose(sa.intensity, y, atol=np.max(y) * 1e-6)
    # the spec's worked example, written by hand: Y = 1 2 3 3 2 1 0 -1 -2 -3 on X = 1..10, two
    # DIFDUP lines with the Y-check value repeated at the start of the second line
    hand = tmp_path / "spec.dx"
    hand.write_text("##TITLE=JCAMP-DX 4.24 compression example\n##JCAMP-DX=4.24\n##XUNITS=1/CM\n##XFACTOR=1\n"
                    "##YFACTOR=0.5\n##FIRSTX=1\n##LASTX=10\n##NPOINTS=10\n##XYDATA=(X++(Y..Y))\n"
                    "1AJT%\n4CjX $$ check value C repeats the last Y of line 1\n##END=\n")
    s = ex.read_spectrum(hand)
    np.testing.assert_allclose(s.intensity, 0.5 * np.array([1, 2, 3, 3, 2, 1, 0, -1, -2, -3]))
    broken = tmp_path / "broken.dx"
    broken.write_text(hand.read_text().replace("4CjX", "4DjX"))
    with pytest.raises(InputError, match="Y-check"):
        ex.read_spectrum(broken)


def _spc_bytes_per_spec(x0: float, x1: float, y: np.ndarray, xtype: int = 13) -> bytes:
    """Thermo-Galactic SPC, new format (0x4B), single Y, evenly spaced X, float32 Y (fexp=0x80)."""
    hdr = struct.pack("<BBBbIddIBBBBI9s9sH32s130s30sIIBBHf48sfIfB187s",
                      0x00, 0x4B, 0, -128, len(y), x0, x1, 1, xtype, 0, 0, 0, 0, b"", b"", 0, b"\0" * 32,
                      b"written per the SPC spec".ljust(130, b"\0"), b"", 0, 0, 0, 0, 0, 1.0, b"", 0.0, 0, 0.0, 0, b"")
    assert len(hdr) == 512
    sub = struct.pack("<BbHfffIIf4s", 0, -128, 0, 0.0, 0.0, 0.0, 0, 0, 0.0, b"")
    assert len(sub) == 32
    return hdr + sub + np.asarray(y, dtype="<f4").tobytes()


def test_spc_files_from_spec_and_from_spc_io(tmp_path):
    y = _llzo_like(X)
    p = tmp_path / "spec.spc"
    p.write_bytes(_spc_bytes_per_spec(X[0], X[-1], y))
    s = ex.read_spectrum(p)
    np.testing.assert_allclose(s.freq_cm1, X, rtol=1e-9)
    np.testing.assert_allclose(s.intensity, y, rtol=1e-6, atol=1e-6 * y.max())
    assert "XRAMANS" in s.metadata["spc_xtype"]
    nm = tmp_path / "nm.spc"
    nm.write_bytes(_spc_bytes_per_spec(550.0, 600.0, y, xtype=3))
    with pytest.raises(InputError, match="XNMETR"):
        ex.read_spectrum(nm)
    # the library's own writer: two subfiles (e.g. two acquisitions) on one X axis. spc-io 0.2.1
    # writes a readable file only with a log book and without z values (else its offsets are off)
    from spc_io import SPC
    from spc_io.high_level import EvenAxis, LogBook
    from spc_io.low_level.headers.fxytype import Fxtype

    spc = SPC(xarray=EvenAxis(float(X[0]), float(X[-1]), len(X)), log_book=LogBook(text={"source": "ramanscreen test"}))
    spc.add_subfile(yarray=y.astype(np.float32))
    spc.add_subfile(yarray=(2 * y).astype(np.float32))
    raw = spc.to_spc_raw()
    raw.main_header.fxtype = Fxtype(13)  # the writer leaves the X type arbitrary; set Raman shift
    q = tmp_path / "lib.spc"
    q.write_bytes(raw.to_bytes())
    s2 = ex.read_spectrum(q)
    np.testing.assert_allclose(s2.intensity, 1.5 * y, rtol=1e-5, atol=1e-6 * y.max())
    assert s2.metadata["selection"] == "mean of 2 subfiles"
    np.testing.assert_allclose(ex.read_spectrum(q, index=1).intensity, 2 * y, rtol=1e-5, atol=1e-6 * y.max())


def _wdf_bytes(x: np.ndarray, spectra: np.ndarray, laser_nm: float = 532.0) -> bytes:
    """A minimal Renishaw WiRE .wdf (blocks WDF1, DATA, XLST, YLST) in the layout renishawWiRE reads."""
    spectra = np.atleast_2d(spectra).astype("<f4")
    count, npts = spectra.shape
    head = bytearray(0x200)
    struct.pack_into("<4sIq", head, 0, b"WDF1", 1, 0x200)
    struct.pack_into("<iqqiiii24sHHHHii", head, 0x3C, npts, count, count, 1, 1, npts, 0, b"WiRE", 4, 4, 0, 6602, 1,
                     1 if count == 1 else 2)
    struct.pack_into("<if", head, 0x98, 1, 1e7 / laser_nm)
    struct.pack_into("<4s", head, 0xD0, b"test")
    struct.pack_into("<20s", head, 0xF0, b"LLZO-like, synthetic")
    assert len(head) == 0x200

    def block(name: bytes, payload: bytes) -> bytes:
        return name + struct.pack("<Iq", 1, 16 + len(payload)) + payload

    return (bytes(head) + block(b"DATA", spectra.tobytes())
            + block(b"XLST", struct.pack("<ii", 1, 1) + np.asarray(x, "<f4").tobytes())
            + block(b"YLST", struct.pack("<ii", 0, 0) + np.zeros(1, "<f4").tobytes()))


def test_wdf_written_per_the_reader_layout(tmp_path):
    y = _llzo_like(X)
    p = tmp_path / "s.wdf"
    p.write_bytes(_wdf_bytes(X[::-1], y[::-1]))  # WiRE stores descending Raman shift
    s = ex.read_spectrum(p)
    np.testing.assert_allclose(s.freq_cm1, X, atol=1e-3)
    np.testing.assert_allclose(s.intensity, y, rtol=1e-5, atol=1e-6 * y.max())
    assert s.metadata["wdf_xunit"] == "RamanShift" and s.metadata["laser_nm"].startswith("532")
    r = _cli("experiment", "import", str(p), "--out", str(tmp_path / "s.csv"), "--normalize", "max")
    assert r.returncode == 0, r.stderr
    back = pacsv.read_csv(tmp_path / "s.csv").to_pydict()
    assert list(back) == ["freq_cm1", "intensity"] and max(back["intensity"]) == pytest.approx(1.0)


def test_wdf_without_the_extra_says_how_to_install(tmp_path):
    p = tmp_path / "s.wdf"
    p.write_bytes(_wdf_bytes(X, _llzo_like(X)))
    code = ("import sys; sys.modules['renishawWiRE'] = None\n"
            "from ramanscreen.flows.cli import main\n"
            f"main(['experiment', 'import', {str(p)!r}, '--out', {str(tmp_path / 'o.csv')!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and "experiment-wdf" in r.stderr and r.stderr.count("\n") == 1


def test_baseline_and_normalisation():
    y = _llzo_like(X) + 20 + 0.05 * X
    s = ex.Spectrum(X, y, "mem", "text")
    flat = ex.process(s, baseline="asls", normalize="max", range_cm1=(150, 900))
    assert flat.freq_cm1[0] >= 150 and flat.freq_cm1[-1] <= 900 and flat.intensity.max() == pytest.approx(1.0)
    quiet = (flat.freq_cm1 > 450) & (flat.freq_cm1 < 560)
    assert np.abs(flat.intensity[quiet]).max() < 0.05  # background gone between bands
    area = ex.process(s, baseline="poly", normalize="area")
    assert np.trapezoid(area.intensity, area.freq_cm1) == pytest.approx(1.0)


def test_compare_finds_shifts_and_similarity(tmp_path):
    from ramanscreen.tasks.common import write_table

    rng = np.random.default_rng(2)
    exp = _llzo_like(X) + 30 + 0.03 * X + rng.normal(0, 0.2, X.size)
    comp = _llzo_like(X, shift=-8.0)  # an MLFF spectrum that is 8 cm⁻¹ soft
    pe, pc = tmp_path / "exp.txt", tmp_path / "comp.parquet"
    pe.write_text("\n".join(f"{a} {b}" for a, b in zip(X, exp, strict=True)) + "\n")
    write_table({"freq_cm1": X, "intensity": comp}, pc)
    cmp = ex.compare_spectra(ex.read_spectrum(pe), ex.read_spectrum(pc))
    assert cmp.range_cm1 == (100.0, 1000.0) and 0.5 < cmp.pearson_r < 0.99
    shifts = [s for s, m in zip(cmp.matches["shift_cm1"], cmp.matches["matched"], strict=True) if m]
    assert len(shifts) == 3 and np.allclose(shifts, -8.0, atol=1.0)
    same = ex.compare_spectra(ex.read_spectrum(pc), ex.read_spectrum(pc), baseline="none")
    assert same.pearson_r == pytest.approx(1.0)
    r = _cli("experiment", "compare", str(pe), str(pc), "--out", str(tmp_path / "cmp.csv"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "cmp.json").read_text())
    assert summary["n_matched"] == 3 and abs(summary["mean_abs_shift_cm1"] - 8) < 1
    assert (tmp_path / "cmp.png").read_bytes()[1:4] == b"PNG" and pacsv.read_csv(tmp_path / "cmp.csv").num_rows == 3


# --------------------------------------------------------------------------------------------
# Experimental spectra in the results root: Parquet via the CLI, SQL joins, training data
# --------------------------------------------------------------------------------------------

def _main(capsys, *args):
    """The CLI in-process (``ramanscreen.flows.cli.main``, as the console script runs it): exit code, stdout, stderr."""
    import warnings

    from ramanscreen.flows.cli import main

    shown = warnings.showwarning
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        warnings.showwarning = shown
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _computed_run(root, material="LLZO", formula="Li7La3Zr2O12", campaign="demo"):
    """A real committed computed run (the results writer) with an LLZO-like spectrum on a 2 cm⁻¹ grid."""
    from ramanscreen.tasks.results import write_run

    f = np.arange(0.0, 1200.0, 2.0)
    write_run(root, campaign, material, "T600", meta=dict(formula=formula, temperature_k=600.0, n_atoms=192,
              mlff="chgnet", reference_method="embedded", n_train=50),
              spectrum={"freq_cm1": f, "intensity": _llzo_like(f, shift=4.0)},
              transport=[{"species": "Li", "D_cm2_s": 1e-6}])


def _write_text(path, shift=0.0, slope=0.0):
    y = _llzo_like(X, shift) + slope * (X - 100.0)
    path.write_text("\n".join(f"{a:.3f},{b:.6f}" for a, b in zip(X, y, strict=True)) + "\n")
    return path


def test_import_into_results_root_is_idempotent_and_joins_in_sql(tmp_path, capsys):
    from ramanscreen.analytics.db import VIEWS, connect, run_query

    root = tmp_path / "results"
    _computed_run(root)
    a = _write_text(tmp_path / "batch 1.csv")
    b = _write_text(tmp_path / "batch2.csv", shift=-2.0, slope=0.01)
    args = ["--results-root", str(root), "--material", "LLZO", "--formula", "Li7La3Zr2O12",
            "--temperature-k", "298", "--sigma-s-cm", "3e-4", "--normalize", "max"]
    r = _cli("experiment", "import", str(a), *args, "--campaign", "demo", "--source", "lab notebook p. 12")
    assert r.returncode == 0 and "batch_1.csv.parquet" in r.stdout, r.stderr
    code, _, err = _main(capsys, "experiment", "import", str(a), *args, "--campaign", "demo",  # re-import: replaced
                         "--source", "lab notebook p. 12")
    assert code == 0, err
    code, _, err = _main(capsys, "experiment", "import", str(b), *args, "--baseline", "asls")  # no campaign: added
    assert code == 0, err
    files = sorted(p.relative_to(root).as_posix() for p in (root / "experimental_spectra").rglob("*.parquet"))
    assert files == ["experimental_spectra/material=LLZO/campaign=_/batch2.csv.parquet",
                     "experimental_spectra/material=LLZO/campaign=demo/batch_1.csv.parquet"]
    assert not list(root.rglob("*.tmp"))
    assert {"experimental_spectra", "experimental_conductivity"} <= set(VIEWS)

    con = connect(root)
    rows = run_query(con, "SELECT spectrum_id, campaign, count(*), count(DISTINCT write_id), any_value(source), "
                          "any_value(baseline), any_value(format), max(intensity), any_value(file_sha256) "
                          "FROM experimental_spectra GROUP BY ALL ORDER BY 1").rows
    assert [r[:4] for r in rows] == [("batch2.csv", None, len(X), 1), ("batch_1.csv", "demo", len(X), 1)]
    assert rows[1][4] == "lab notebook p. 12" and rows[0][4].endswith("batch2.csv")
    assert rows[0][5] == "asls" and rows[1][5] == "none" and rows[0][6] == "text" and rows[1][7] == 1.0
    import hashlib
    assert rows[1][8] == hashlib.sha256(a.read_bytes()).hexdigest()

    # The join: experimental bins matched to the computed 2 cm⁻¹ bins of the same material (a
    # spectrum without a campaign joins every campaign), and the Pearson r of the two intensities.
    join = run_query(con, """
        SELECT e.spectrum_id, count(*) AS n, corr(e.intensity, s.intensity) AS r
        FROM experimental_spectra e
        JOIN spectra s ON s.material = e.material AND (e.campaign IS NULL OR e.campaign = s.campaign)
                      AND s.freq_cm1 = e.freq_cm1
        WHERE e.freq_cm1 BETWEEN 100 AND 1000
        GROUP BY e.spectrum_id ORDER BY 1""").rows
    con.close()
    even = X[(X % 2 == 0)]
    y_comp = _llzo_like(even, 4.0)
    for sid, n, r_sql in join:
        shift, slope = (-2.0, 0.01) if sid == "batch2.csv" else (0.0, 0.0)
        y_exp = _llzo_like(even, shift) + slope * (even - 100.0)
        assert n == len(even)
        if sid == "batch_1.csv":  # no baseline: the SQL r is numpy's on the same bins
            assert r_sql == pytest.approx(np.corrcoef(y_exp, y_comp)[0, 1], abs=1e-9)
        assert 0.5 < r_sql < 1.0


def test_results_root_import_of_a_malformed_file_writes_nothing(tmp_path, capsys):
    root = tmp_path / "results"
    _computed_run(root)
    junk = tmp_path / "junk.csv"
    junk.write_text("shift,counts\n100,1\n200,oops\n300,2\n")
    r = _cli("experiment", "import", str(junk), "--results-root", str(root), "--material", "LLZO")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "junk.csv" in r.stderr, r.stderr
    ok = str(_write_text(tmp_path / "ok.csv"))
    for bad, flag in ((["--material", "LL ZO"], "--material"), (["--material", "LLZO", "--sigma-s-cm", "-1"], "--sigma-s-cm"),
                      (["--material", "LLZO", "--out", str(tmp_path / "o.txt")], "--out"), ([], "--material")):
        code, _, err = _main(capsys, "experiment", "import", ok, "--results-root", str(root), *bad)
        assert code == 2 and err.count("\n") == 1 and flag in err, err
    assert not (tmp_path / "o.txt").exists()
    assert not (root / "experimental_spectra").exists()


# Four made-up "measured" samples (synthetic spectra and σ, not literature values): the band
# near 640 cm⁻¹ shifts by `shift` and log10 σ = -4 + 0.1 · shift, so the regression must find it.
_SAMPLES = [("LLZO_a", "Li7La3Zr2O12", -6.0, 298.0), ("LLZO_b", "Li6.5La3Zr1.5Ta0.5O12", -2.0, 298.0),
            ("LLZO_c", "Li6.4La3Zr1.4Ta0.6O12", 3.0, 350.0), ("LLZO_d", "Li6.25Al0.25La3Zr2O12", 7.0, 400.0),
            ("LLZO_e", "Li6.6La3Zr1.6Nb0.4O12", 10.0, 330.0)]


def _import_samples(tmp_path, root, capsys):
    for name, formula, shift, t in _SAMPLES:
        p = _write_text(tmp_path / f"{name}.csv", shift=shift)
        code, _, err = _main(capsys, "experiment", "import", str(p), "--results-root", str(root), "--material", name,
                             "--formula", formula, "--temperature-k", str(t),
                             "--sigma-s-cm", f"{10 ** (-4 + 0.1 * shift):.6g}", "--normalize", "max")
        assert code == 0, err
    # a spectrum without σ is no training data
    code, _, err = _main(capsys, "experiment", "import", str(_write_text(tmp_path / "nosigma.csv")),
                         "--results-root", str(root), "--material", "LLZO_x", "--temperature-k", "298")
    assert code == 0, err


def test_experimental_rows_train_the_peak_regression(tmp_path, capsys):
    root = tmp_path / "results"
    _computed_run(root)
    _import_samples(tmp_path, root, capsys)
    out = tmp_path / "reg.json"
    code, stdout, err = _main(capsys, "peaks", "regress", str(root), "--band", "640", "--feature", "pos_640",
                              "--out", str(out), "--profile", "gaussian", "--baseline", "none")
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["n"] == len(_SAMPLES) and "5 experimental spectra" in stdout
    assert res["coefficients"]["pos_640"] == pytest.approx(0.1, rel=0.02)
    assert res["r2"] > 0.99
    code, _, err = _main(capsys, "peaks", "regress", str(root), "--feature", "pos_640")
    assert code == 2 and "--band" in err and err.count("\n") == 1


def test_experimental_rows_train_the_surrogate(tmp_path, capsys):
    from ramanscreen.tasks import surrogate as sg

    root = tmp_path / "results"
    _computed_run(root)
    _import_samples(tmp_path, root, capsys)
    table = sg.read_property_table(root)
    assert table.columns["kind"] == ["computed"] + ["experimental"] * len(_SAMPLES)
    assert table.formula[1:] == [s[1] for s in _SAMPLES]
    assert list(table.temperature_k[1:]) == [s[3] for s in _SAMPLES]
    assert table.columns["sigma_S_cm"][1:] == pytest.approx([10 ** (-4 + 0.1 * s[2]) for s in _SAMPLES], rel=1e-5)
    model = tmp_path / "gp.joblib"
    code, stdout, err = _main(capsys, "surrogate", "fit", str(root), "--rows", "experimental", "--out", str(model),
                              "--n-trials", "2", "--cv-folds", "2", "--family", "rbf", "--no-ard")
    assert code == 0, err
    info = json.loads(model.with_suffix(".json").read_text())
    assert "5 experimental rows" in stdout
    assert info["n_train"] == info["cv"]["n"] == len(_SAMPLES)
    assert info["train_temperature_k"] == [298.0, 400.0]
    code, _, err = _main(capsys, "surrogate", "fit", str(root), "--rows", "nope", "--out", str(model))
    assert code == 2 and "--rows" in err and err.count("\n") == 1
