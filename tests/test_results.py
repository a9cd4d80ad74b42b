"""tasks/results.py: Parquet tables keyed by (campaign, material, run_id), atomic, versioned.

Real files, real DuckDB, real processes (killed and concurrent). ``write_synthetic`` is also
used by tests/test_analytics.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from synthetic_results import FREQ, SYNTHETIC, sql, write_synthetic

from ramanscreen.tasks import results
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.results import SCHEMA_VERSION, committed_runs, committed_write_id, write_run

REPO = Path(__file__).resolve().parents[1]

def test_layout_schema_version_and_roundtrip(tmp_path) -> None:
    rec = write_synthetic(tmp_path, "camp", "AgI")
    assert rec.rows == {"materials": 1, "spectra": FREQ.size, "transport": 2, "descriptors": 1,
                        "ml_metrics": 1, "msd": 102, "vdos": 6, "mlff_validation": 0, "convergence": 0,
                        "convergence_spectra": 0, "alpha_parity": 0, "force_parity": 0,
                        "reference_spectrum": 0}
    commit = tmp_path / "materials/campaign=camp/material=AgI/run_id=r1/run.parquet"
    assert rec.paths["materials"] == commit and commit.is_file()
    data = tmp_path / f"spectra/campaign=camp/material=AgI/run_id=r1/{rec.write_id}.parquet"
    assert rec.paths["spectra"] == data
    for path in rec.paths.values():
        assert results.schema_version_of(path) == SCHEMA_VERSION
        assert pq.read_schema(path).metadata[b"ramanscreen.write_id"].decode() == rec.write_id
    # Every table file also reads on its own (pyarrow), with keys and version as columns.
    tr = pq.read_table(rec.paths["transport"]).to_pylist()
    assert [r["species"] for r in tr] == ["Ag", "I"]
    assert {r["campaign"] for r in tr} == {"camp"} and {r["schema_version"] for r in tr} == {SCHEMA_VERSION}
    assert tr[0]["D_cm2_s"] == pytest.approx(2.8e-5) and tr[1]["D_err_cm2_s"] is None
    # DuckDB over the hive-partitioned globs, through the shipped views.
    assert sql(tmp_path, "SELECT count(*), min(freq_cm1), max(freq_cm1) FROM spectra") == [(FREQ.size, 0.0, 1000.0)]
    (mat,) = sql(tmp_path, "SELECT formula, temperature_k, n_atoms, mobile_species, n_train, settings_json, "
                           "schema_version, code_version IS NOT NULL, created_at IS NOT NULL FROM materials")
    assert mat[:5] == ("AgI", 500.0, 128, "Ag", 140)
    assert '"seed": 0' in mat[5] and mat[6:] == (SCHEMA_VERSION, True, True)
    assert sql(tmp_path, "SELECT species, count(*), max(msd_A2) FROM msd GROUP BY 1 ORDER BY 1") == [
        ("Ag", 51, pytest.approx(6e4 * 2.8e-5 * 10.0)), ("I", 51, pytest.approx(0.1))]
    assert sql(tmp_path, "SELECT r2_diag, r2_offdiag, rmse_diag_A3, rmse_offdiag_A3, n_train FROM ml_metrics") == [
        (0.95, 0.85, 0.4, 0.2, 140)]
    assert sql(tmp_path, "SELECT frac_below_wc, lowfreq_to_host_ratio FROM descriptors") == [(0.6, 6.0)]
    assert committed_runs(tmp_path) == [("camp", "AgI", "r1")]
    assert committed_write_id(tmp_path, "camp", "AgI", "r1") == rec.write_id


def test_rewrite_replaces_without_duplicates(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(results, "STALE_GRACE_S", 0.0)  # no grace period for readers here
    first = write_synthetic(tmp_path, "camp", "AgI")
    write_synthetic(tmp_path, "camp", "Na3PS4")
    second = write_synthetic(tmp_path, "camp", "AgI", scale=2.0)
    assert second.write_id != first.write_id
    for table, per_run in (("spectra", FREQ.size), ("transport", 2), ("msd", 102), ("materials", 1)):
        assert sql(tmp_path, f"SELECT material, count(*) FROM {table} GROUP BY 1 ORDER BY 1") == [
            ("AgI", per_run), ("Na3PS4", per_run)], table
    assert sql(tmp_path, "SELECT D_cm2_s FROM transport WHERE material = 'AgI' AND species = 'Ag'") == [
        (pytest.approx(5.6e-5),)]
    # With no grace period, the superseded version goes at once (test_storage_is_bounded_* has one).
    tdir = tmp_path / "transport/campaign=camp/material=AgI/run_id=r1"
    assert sorted(p.name for p in tdir.iterdir()) == [f"{second.write_id}.parquet"]
    third = write_synthetic(tmp_path, "camp", "AgI", scale=4.0)
    assert sorted(p.name for p in tdir.iterdir()) == [f"{third.write_id}.parquet"]
    assert sql(tmp_path, "SELECT count(*), max(D_cm2_s) FROM transport WHERE material = 'AgI'") == [
        (2, pytest.approx(4 * 2.8e-5))]


def _data_files(root: Path) -> list[Path]:
    return sorted(p for t in results.DATA_TABLES for p in (root / t).rglob("*") if p.is_file())


def _direct_rows(root: Path, table: str) -> int:
    """Rows of a table read straight from the tree (every file), not through the views."""
    import pyarrow.dataset as ds

    return ds.dataset(str(root / table), format="parquet", partitioning="hive").count_rows()


def test_unchanged_rerun_writes_nothing(tmp_path) -> None:
    """issue 11: "every re-run writes new Parquet data files"; three runs, one version on disk."""
    first = write_synthetic(tmp_path, "camp", "AgI")
    files = _data_files(tmp_path)
    stamps = [p.stat().st_mtime_ns for p in files]
    commit = tmp_path / "materials/campaign=camp/material=AgI/run_id=r1/run.parquet"
    commit_stamp = commit.stat().st_mtime_ns
    for _ in range(2):
        again = write_synthetic(tmp_path, "camp", "AgI")
        assert again.write_id == first.write_id
    assert _data_files(tmp_path) == files and [p.stat().st_mtime_ns for p in files] == stamps
    assert commit.stat().st_mtime_ns == commit_stamp
    for table, n in (("transport", 2), ("msd", 102), ("spectra", FREQ.size)):
        assert _direct_rows(tmp_path, table) == n == sql(tmp_path, f"SELECT count(*) FROM {table}")[0][0]
    changed = write_synthetic(tmp_path, "camp", "AgI", scale=3.0)  # a real change is still written
    assert changed.write_id != first.write_id
    assert sql(tmp_path, "SELECT max(D_cm2_s) FROM transport") == [(pytest.approx(3 * 2.8e-5),)]


def test_storage_is_bounded_after_the_grace_period(tmp_path, monkeypatch) -> None:
    """Superseded files stay for the readers' grace period, then the next writer or
    `ramanscreen results vacuum` removes them: the file count is stable over re-runs that change
    the data, and the tree read directly holds no doubled rows."""
    import time

    monkeypatch.setattr(results, "STALE_GRACE_S", 0.5)
    counts = []
    for k in range(3):
        write_synthetic(tmp_path, "camp", "AgI", scale=1.0 + k)
        write_synthetic(tmp_path, "camp", "Na3PS4", scale=1.0 + k)
        counts.append(len(_data_files(tmp_path)))
        time.sleep(0.6)  # nightly runs are far apart: the version superseded before last has expired
    # each write keeps the current version and the one it just superseded (grace period running):
    # one data file per data table per material and version
    n = 2 * len(results.DATA_TABLES)
    assert counts == [n, 2 * n, 2 * n]
    assert _direct_rows(tmp_path, "transport") == 8  # two versions of two materials, during the grace period
    assert results.vacuum(tmp_path) == {"removed": n, "kept": n}
    assert len(_data_files(tmp_path)) == n
    assert _direct_rows(tmp_path, "transport") == 4 == sql(tmp_path, "SELECT count(*) FROM transport")[0][0]
    out = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "results", "vacuum", "-r", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "removed 0 superseded data files" in out.stdout, out.stderr


def test_exception_midway_keeps_previous_version(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(results, "STALE_GRACE_S", 0.0)
    old = write_synthetic(tmp_path, "camp", "AgI")
    real = results._write_parquet
    calls = []

    def failing(table, path):
        calls.append(path)
        if len(calls) == 3:  # spectra and transport are written, descriptors is not
            raise OSError("disk full (simulated)")
        real(table, path)

    monkeypatch.setattr(results, "_write_parquet", failing)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic(tmp_path, "camp", "AgI", scale=3.0)
    monkeypatch.setattr(results, "_write_parquet", real)
    # The new spectra/transport files exist on disk but are invisible: the old run shows, whole.
    assert len(list((tmp_path / "transport/campaign=camp/material=AgI/run_id=r1").glob("*.parquet"))) == 2
    assert sql(tmp_path, "SELECT DISTINCT write_id FROM transport") == [(old.write_id,)]
    assert sql(tmp_path, "SELECT D_cm2_s FROM transport WHERE species = 'Ag'") == [(pytest.approx(2.8e-5),)]
    assert sql(tmp_path, "SELECT count(*) FROM spectra") == [(FREQ.size,)]
    # The next write removes the crashed write's leftovers (and, with no grace period, the version
    # it supersedes).
    new = write_synthetic(tmp_path, "camp", "AgI", scale=3.0)
    assert sorted(p.name for p in (tmp_path / "transport/campaign=camp/material=AgI/run_id=r1").iterdir()) == [
        f"{new.write_id}.parquet"]


_KILL_SCRIPT = textwrap.dedent("""
    import os
    from ramanscreen.tasks import results
    from synthetic_results import write_synthetic
    real, n = results._write_parquet, []
    def dying(table, path):
        n.append(1)
        if len(n) == {die_at}:
            os._exit(9)   # a hard kill: no cleanup, no finally blocks
        real(table, path)
    results._write_parquet = dying
    write_synthetic({root!r}, "camp", "Na3PS4", scale=5.0)
""")


@pytest.mark.parametrize("die_at", [1, 4, 7])  # before any file, midway, just before the commit
def test_killed_writer_leaves_no_visible_partial_run(tmp_path, die_at, helpers_env) -> None:
    write_synthetic(tmp_path, "camp", "AgI")
    script = _KILL_SCRIPT.format(die_at=die_at, root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=helpers_env)
    assert proc.returncode == 9, proc.stderr
    assert committed_runs(tmp_path) == [("camp", "AgI", "r1")]
    for table in ("materials", "spectra", "transport", "descriptors", "ml_metrics", "msd", "vdos"):
        assert sql(tmp_path, f"SELECT DISTINCT material FROM {table}") == [("AgI",)], table
    # A re-run after the crash completes the material, once.
    write_synthetic(tmp_path, "camp", "Na3PS4", scale=5.0)
    assert sql(tmp_path, "SELECT material, count(*) FROM transport GROUP BY 1 ORDER BY 1") == [("AgI", 2), ("Na3PS4", 2)]


_CONCURRENT_SCRIPT = textwrap.dedent("""
    import sys
    from synthetic_results import SYNTHETIC, write_synthetic
    campaign, root = sys.argv[1], sys.argv[2]
    for rep in range(3):
        for name in SYNTHETIC:
            write_synthetic(root, campaign, name, scale=1.0 + rep)
        # Both processes also rewrite one shared run, to exercise the per-run lock.
        write_synthetic(root, "shared", "AgI", scale=float(ord(campaign[-1])))
""")


def test_two_processes_write_one_root_concurrently(tmp_path, helpers_env) -> None:
    script = _CONCURRENT_SCRIPT
    procs = [subprocess.Popen([sys.executable, "-c", script, c, str(tmp_path)], cwd=REPO, env=helpers_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in ("campA", "campB")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    n = len(SYNTHETIC)
    assert sql(tmp_path, "SELECT campaign, count(*) FROM materials GROUP BY 1 ORDER BY 1") == [
        ("campA", n), ("campB", n), ("shared", 1)]
    assert sql(tmp_path, "SELECT campaign, count(*) FROM spectra GROUP BY 1 ORDER BY 1") == [
        ("campA", n * FREQ.size), ("campB", n * FREQ.size), ("shared", FREQ.size)]
    # Both campaigns hold their last (third) write; the shared run holds one writer's version, whole.
    assert sql(tmp_path, "SELECT DISTINCT D_cm2_s / 2.8e-5 FROM transport WHERE material = 'AgI' "
                         "AND species = 'Ag' AND campaign LIKE 'camp%'") == [(pytest.approx(3.0),)]
    shared = sql(tmp_path, "SELECT D_cm2_s / 2.8e-5, write_id FROM transport WHERE campaign = 'shared' AND species = 'Ag'")
    assert len(shared) == 1 and round(shared[0][0]) in (ord("A"), ord("B"))
    assert sql(tmp_path, "SELECT count(DISTINCT write_id) FROM msd WHERE campaign = 'shared'") == [(1,)]
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".tmp"]
    assert leftovers == []


_REWRITER_SCRIPT = textwrap.dedent("""
    from synthetic_results import write_synthetic
    for i in range(20):
        write_synthetic({root!r}, "camp", "AgI", scale=1.0 + i)
""")


def test_reader_during_rewrites_sees_one_whole_version(tmp_path, helpers_env) -> None:
    from ramanscreen.analytics.db import connect

    write_synthetic(tmp_path, "camp", "AgI")
    write_synthetic(tmp_path, "camp", "Na3PS4")
    writer = subprocess.Popen([sys.executable, "-c", _REWRITER_SCRIPT.format(root=str(tmp_path))],
                              cwd=REPO, stderr=subprocess.PIPE, text=True, env=helpers_env)
    seen, reads = set(), 0
    while writer.poll() is None or reads == 0:
        con = connect(tmp_path)
        got = con.execute(
            "SELECT (SELECT count(*) FROM spectra WHERE material = 'AgI'), "
            "(SELECT count(DISTINCT write_id) FROM spectra WHERE material = 'AgI'), "
            "(SELECT count(*) FROM transport WHERE material = 'AgI'), "
            "(SELECT any_value(D_cm2_s) / 2.8e-5 FROM transport WHERE material = 'AgI' AND species = 'Ag'), "
            "(SELECT count(*) FROM msd)").fetchall()[0]
        con.close()
        assert got[:3] == (FREQ.size, 1, 2) and got[4] == 2 * 102, got
        seen.add(round(got[3]))
        reads += 1
    assert writer.returncode == 0, writer.stderr.read()
    assert reads >= 3 and len(seen) >= 2  # the reader really overlapped several rewrites


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"meta": {"formula": "AgI"}}, "materials.temperature_k"),
        ({"spectrum": {"freq_cm1": [0.0, 2.0, 1.0], "intensity": [1.0, 1.0, 1.0]}}, "spectra.freq_cm1"),
        ({"spectrum": {"freq_cm1": [0.0, 1.0], "intensity": [1.0, 1.0, 1.0]}}, "spectra"),
        ({"spectrum": {"freq_cm1": [0.0, 1.0], "intensity": [1.0, 1.0], "colour": [1, 2]}}, "spectra.colour"),
        ({"transport": [{"species": "Ag", "D_cm2_s": 1e-5}, {"species": "Ag", "D_cm2_s": 2e-5}]}, "transport.species"),
        ({"transport": [{"species": "Na", "D_cm2_s": float("inf")}]}, "transport.D_cm2_s"),
        ({"transport": [{"species": "I", "D_cm2_s": 1e-9}]}, "materials.mobile_species"),
        ({"ml_metrics": {"r2_diag": 0.9}}, "ml_metrics.r2_offdiag"),
        ({"descriptors": {"bad name": 1.0}}, "descriptors.bad name"),
        ({"descriptors": {"slope": 1.0, "Slope": 2.0}}, "descriptors.Slope"),
        ({"ml_metrics": {"r2_diag": 0.9, "r2_offdiag": 0.8, "rmse_diag_A3": 0.1, "rmse_offdiag_A3": 0.1,
                         "RMSE_diag_A3": 0.2}}, "ml_metrics.RMSE_diag_A3"),
        ({"msd": {"Ag": {"time_ps": [0.0, 1.0, 0.5], "msd_A2": [0.0, 1.0, 2.0]}}}, "msd.time_ps"),
    ],
)
def test_bad_input_raises_and_writes_nothing(tmp_path, change, field) -> None:
    with pytest.raises(InputError) as info:
        write_synthetic(tmp_path, "camp", "AgI", **change)
    assert info.value.field == field, str(info.value)
    assert "\n" not in str(info.value)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["a/b", "x=1", "", "has space", "../up"])
def test_bad_partition_names_are_refused(tmp_path, name) -> None:
    with pytest.raises(InputError, match="cannot name a results partition"):
        write_synthetic(tmp_path, name, "AgI")


def test_optional_tables_are_written_empty(tmp_path) -> None:
    rec = write_run(tmp_path, "camp", "X", "r1", meta=dict(formula="X", temperature_k=300, n_atoms=8, mlff="f",
                                                            reference_method="ref", n_train=4))
    assert rec.rows == {"materials": 1, "spectra": 0, "transport": 0, "descriptors": 0, "ml_metrics": 0,
                        "msd": 0, "vdos": 0, "mlff_validation": 0, "convergence": 0, "convergence_spectra": 0,
                        "alpha_parity": 0, "force_parity": 0, "reference_spectrum": 0}
    assert all(p.is_file() for p in rec.paths.values())
    assert sql(tmp_path, "SELECT count(*) FROM spectra") == [(0,)]
    assert sql(tmp_path, "SELECT count(*) FROM mlff_validation") == [(0,)]
    assert sql(tmp_path, "SELECT count(*) FROM convergence") == [(0,)]
    assert sql(tmp_path, "SELECT count(*) FROM convergence_spectra") == [(0,)]
    assert sql(tmp_path, "SELECT count(*) FROM alpha_parity") == [(0,)]
    assert sql(tmp_path, "SELECT count(*) FROM force_parity") == [(0,)]
    assert sql(tmp_path, "SELECT count(*) FROM reference_spectrum") == [(0,)]
    assert sql(tmp_path, "SELECT material, D_cm2_s, cp_fraction FROM screening") == [("X", None, None)]


def test_a_root_written_before_the_parity_tables_reads_them_empty(tmp_path) -> None:
    import shutil

    from ramanscreen.analytics.db import connect

    write_synthetic(tmp_path, "camp", "AgI")
    for table in ("alpha_parity", "force_parity", "reference_spectrum"):
        shutil.rmtree(tmp_path / table)  # as an older writer left the root
    con = connect(tmp_path)
    try:
        assert con.execute("SELECT count(*), count(alpha_reference_A3) FROM alpha_parity").fetchall() == [(0, 0)]
        assert con.execute("SELECT count(*), count(force_teacher_eV_A) FROM force_parity").fetchall() == [(0, 0)]
        assert con.execute("SELECT count(*), count(intensity_reference), count(l2_difference) "
                           "FROM reference_spectrum").fetchall() == [(0, 0, 0)]
    finally:
        con.close()


def test_spectrum_object_with_attributes_is_accepted(tmp_path) -> None:
    from dataclasses import dataclass

    @dataclass
    class Spectrum:  # shaped like ramanscreen.tasks.spectra.RamanSpectrum; extra fields are ignored
        freq_cm1: np.ndarray
        intensity: np.ndarray
        a2: np.ndarray
        gamma2: np.ndarray
        sigma_cm1: float = 4.0

    f = np.array([0.0, 5.0, 10.0])
    write_synthetic(tmp_path, "camp", "AgI", spectrum=Spectrum(f, f + 1, f, 2 * f))
    assert sql(tmp_path, "SELECT intensity, gamma2, band_low FROM spectra ORDER BY freq_cm1") == [
        (1.0, 0.0, None), (6.0, 10.0, None), (11.0, 20.0, None)]


def test_transport_as_per_species_mapping_and_root_with_other_data(tmp_path) -> None:
    (tmp_path / "prefect-cache").mkdir()  # a results root may hold other things
    write_synthetic(tmp_path, "camp", "AgI", transport={"Ag": {"D_cm2_s": 2e-5, "D_err_cm2_s": 1e-6},
                                                        "I": {"D_cm2_s": 3e-9}})
    assert sql(tmp_path, "SELECT species, D_cm2_s, D_err_cm2_s FROM transport ORDER BY 1") == [
        ("Ag", 2e-5, 1e-6), ("I", 3e-9, None)]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_synthetic(afile, "camp", "AgI")


def test_real_stage_outputs_are_written_as_they_come(tmp_path, rng) -> None:
    """RamanSpectrum (+ committee band), central_peak_descriptors, TransportResult and
    alpha_metrics from the real stage modules go into write_run without reshaping."""
    import dataclasses

    from ase import Atoms

    from ramanscreen.tasks.polarizability import alpha_metrics
    from ramanscreen.tasks.spectra import central_peak_descriptors, spectrum_band
    from ramanscreen.tasks.trajectory import Trajectory
    from ramanscreen.tasks.transport import analyze_transport

    n = 2048
    base = np.diag([30.0, 30.0, 30.0])
    noise = rng.normal(scale=0.5, size=(3, n, 3, 3))
    alpha = base + 0.5 * (noise + noise.transpose(0, 1, 3, 2))
    mean, lo, hi = spectrum_band(alpha, 10.0)
    desc = central_peak_descriptors(mean)
    metrics = alpha_metrics(alpha[0, :100], alpha[1, :100])

    steps = rng.normal(scale=0.3, size=(200, 4, 3))
    na = np.cumsum(steps, axis=0) + 2.0
    frames = [Atoms("Na4Cl4", positions=np.vstack([na[i], np.full((4, 3), 5.0) + 0.01 * i % 0.02]),
                    cell=[10.0, 10.0, 10.0], pbc=True) for i in range(200)]
    tr = analyze_transport(Trajectory.from_atoms(frames, dt_fs=10.0), species=["Na", "Cl"], temperature_k=500.0,
                           method="blocks")

    rec = write_run(tmp_path, "real", "NaCl", "r1",
                    meta=dict(formula="NaCl", temperature_k=500.0, n_atoms=8, mlff="none", reference_method="synthetic",
                              n_train=100, mobile_species="Na"),
                    spectrum={**dataclasses.asdict(mean), "band_low": lo, "band_high": hi},
                    transport=tr, descriptors=desc, ml_metrics=metrics, msd=tr, vdos=tr)
    assert rec.rows["spectra"] == mean.freq_cm1.size and rec.rows["transport"] == 2
    assert rec.rows["msd"] == 2 * tr.time_ps.size and rec.rows["vdos"] == 2 * tr.freq_cm1.size
    (d_na,) = sql(tmp_path, "SELECT D_cm2_s FROM transport WHERE species = 'Na'")[0]
    assert d_na == pytest.approx(tr.D_cm2_s["Na"])
    names = {r[0] for r in sql(tmp_path, "DESCRIBE descriptors")}
    assert set(desc) <= names
    (frac,) = sql(tmp_path, "SELECT fraction_below_omega_c FROM descriptors")[0]
    assert frac == pytest.approx(desc["fraction_below_omega_c"])
    # The central_peak view and central_peak_descriptors use the same windows (5-50 of 5-1000 cm^-1).
    (cp,) = sql(tmp_path, "SELECT cp_fraction FROM central_peak")[0]
    assert cp == pytest.approx(desc["fraction_below_omega_c"], rel=0.05)


# ---------------------------------------------------------------------------------------------
# pressure_gpa in every per-run table
# ---------------------------------------------------------------------------------------------
def _pressure_run(root, material, pressure, **extra):
    meta = dict(formula="Li7La3Zr2O12", temperature_k=573.0, n_atoms=192, mlff="chgnet", reference_method="embedded",
                n_train=8, mobile_species="Li")
    if pressure is not None:
        meta["pressure_gpa"] = pressure
    return write_run(root, "p", material, "r1", meta=meta,
                     spectrum={"freq_cm1": [0.0, 10.0, 20.0], "intensity": [0.0, 2.0, 1.0]},
                     transport=extra.get("transport", [{"species": "Li", "D_cm2_s": 1e-6}, {"species": "La", "D_cm2_s": 1e-9}]),
                     descriptors={"frac_below_wc": 0.3},
                     ml_metrics={"r2_diag": 0.9, "r2_offdiag": 0.8, "rmse_diag_A3": 0.1, "rmse_offdiag_A3": 0.1},
                     mlff_validation=[{"species": "Li", "method": "snap-distilled-from-chgnet (not DFT)",
                                       "force_rmse_eV_A": 0.05, "flagged": False}])


def test_every_per_run_table_carries_the_runs_pressure(tmp_path) -> None:
    """NPT at 0.5 GPa is recorded as 0.5 on every per-run row; a fixed cell (no pressure given)
    as 0 GPa (PRESSURE_GPA_DOC), never null; the files carry it, not only the views."""
    from ramanscreen.tasks.results import BUILT_DENSITY_PRESSURE_GPA, PRESSURE_GPA_DOC, PRESSURE_TABLES

    assert BUILT_DENSITY_PRESSURE_GPA == 0.0 and "fixed cell" in PRESSURE_GPA_DOC
    npt = _pressure_run(tmp_path, "npt", 0.5)
    nvt = _pressure_run(tmp_path, "nvt", None)
    for rec, want in ((npt, 0.5), (nvt, 0.0)):
        for table in PRESSURE_TABLES:
            values = pq.read_table(rec.paths[table]).column("pressure_gpa").to_pylist()
            assert values and values == [want] * len(values), (table, values)
    for table in PRESSURE_TABLES:
        got = sql(tmp_path, f"SELECT material, min(pressure_gpa), max(pressure_gpa), count(*) FILTER "
                            f"(WHERE pressure_gpa IS NULL) FROM {table} GROUP BY 1 ORDER BY 1")
        assert got == [("npt", 0.5, 0.5, 0), ("nvt", 0.0, 0.0, 0)], table
    assert sql(tmp_path, "SELECT material, pressure_gpa FROM screening ORDER BY 1") == [("npt", 0.5), ("nvt", 0.0)]


def test_pressure_given_twice_must_agree_and_be_finite(tmp_path) -> None:
    with pytest.raises(InputError, match="differs from the run's") as info:
        _pressure_run(tmp_path, "x", 0.5, transport=[{"species": "Li", "D_cm2_s": 1e-6, "pressure_gpa": 0.1}])
    assert info.value.field == "transport.pressure_gpa"
    _pressure_run(tmp_path, "y", 0.5, transport=[{"species": "Li", "D_cm2_s": 1e-6, "pressure_gpa": 0.5}])
    with pytest.raises(InputError, match="infinite"):
        _pressure_run(tmp_path, "z", float("inf"))
    assert committed_runs(tmp_path) == [("p", "y", "r1")]  # the refused writes left nothing


def test_views_read_a_pre_version_3_fixed_cell_run_as_0_gpa(tmp_path) -> None:
    """Runs written before schema version 3 left a fixed cell's pressure null: the views show 0 GPa."""
    rec = _pressure_run(tmp_path, "old", None)
    commit = rec.paths["materials"]
    t = pq.read_table(commit)
    import pyarrow as pa

    t = t.set_column(t.column_names.index("pressure_gpa"), "pressure_gpa", pa.nulls(1, pa.float64()))
    pq.write_table(t.replace_schema_metadata(pq.read_schema(commit).metadata), commit)
    assert pq.read_table(commit).column("pressure_gpa").to_pylist() == [None]
    assert sql(tmp_path, "SELECT pressure_gpa FROM materials") == [(0.0,)]
    assert sql(tmp_path, "SELECT pressure_gpa FROM screening") == [(0.0,)]
