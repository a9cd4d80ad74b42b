"""analytics/: DuckDB views, ranking, Spearman, classification, plots, and the rank/query CLI.

Results are written through the real writer into real Parquet files; DuckDB reads them.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from synthetic_results import SYNTHETIC, synthetic_spectrum, write_synthetic

from ramanscreen.analytics.db import check_read_only, connect, run_query, views_sql
from ramanscreen.analytics.ranking import Thresholds, ranking, summarize
from ramanscreen.analytics.report import write_report
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.results import write_run

REPO = Path(__file__).resolve().parents[1]
STEP_FREQ = np.arange(0.0, 1000.0 + 1e-9, 1.0)

#: name -> (target cp_fraction, D of Na in cm^2/s); see test_ranking_order_spearman_and_classes.
STEP_RUNS = {"A": (0.6, 2.8e-5), "B": (0.4, 5e-6), "C": (0.2, 1e-7), "D": (0.1, 8e-6), "E": (0.05, 0.0)}


def step_amplitude(cp: float) -> float:
    """Intensity a on [0, 50] and 1 above, on a 1 cm^-1 grid to 1000 cm^-1, gives
    cp_fraction = 45.5 a / (45.5 a + 949.5): the window is 5..50 of 5..1000 cm^-1; the edge
    bins 5 and 1000 weigh 1/2 (trapezoid rule), bins 6..50 and 51..999 weigh 1."""
    return 949.5 * cp / (45.5 * (1.0 - cp))


def write_step_run(root, campaign: str, name: str, cp: float, d: float, **meta_over) -> None:
    a = step_amplitude(cp)
    meta = dict(formula=name, temperature_k=600.0, n_atoms=64, mlff="chgnet", reference_method="embedded",
                n_train=100, mobile_species="Na")
    meta.update(meta_over)
    write_run(root, campaign, name, "r1", meta=meta,
              spectrum={"freq_cm1": STEP_FREQ, "intensity": np.where(STEP_FREQ <= 50.0, a, 1.0)},
              transport=[{"species": "Na", "D_cm2_s": d, "D_err_cm2_s": 0.1 * d}, {"species": "S", "D_cm2_s": 1e-10}],
              descriptors={"lowfreq_to_host_ratio": 10 * cp if name != "D" else 10.0},
              ml_metrics=dict(r2_diag=0.9, r2_offdiag=0.8, rmse_diag_A3=0.5, rmse_offdiag_A3=0.3))


@pytest.fixture(scope="module")
def step_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("step")
    for name, (cp, d) in STEP_RUNS.items():
        write_step_run(root, "steps", name, cp, d)
    return root


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> Path:
    """The paper's four materials as synthetic spectra, plus a second campaign."""
    root = tmp_path_factory.mktemp("paper")
    for name in SYNTHETIC:
        write_synthetic(root, "quick", name)
    write_synthetic(root, "other", "AgI", scale=0.5)
    return root


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "reports" not in p.parts and "_locks" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})


# --------------------------------------------------------------------------- central peak


def test_cp_fraction_matches_the_hand_computed_step(step_root) -> None:
    con = connect(step_root)
    got = dict(con.execute("SELECT material, cp_fraction FROM central_peak").fetchall())
    assert got == pytest.approx({k: v[0] for k, v in STEP_RUNS.items()}, rel=1e-12)
    # The windows are parameters of the table macro: 5..1000 of 5..1000 holds all the intensity.
    assert con.execute("SELECT min(cp_fraction), max(cp_fraction) FROM central_peak_window(5, 1000, 1000)").fetchall() == [
        (pytest.approx(1.0), pytest.approx(1.0))]


def test_cp_fraction_matches_a_numpy_reference(paper_root) -> None:
    con = connect(paper_root)
    got = dict(con.execute("SELECT material, cp_fraction FROM central_peak WHERE campaign = 'quick'").fetchall())
    for name, (*_, cp_amp, peaks) in SYNTHETIC.items():
        spec = synthetic_spectrum(cp_amp, peaks)
        f, y = spec["freq_cm1"], spec["intensity"]
        keep = (f >= 5.0) & (f <= 1000.0)
        f, y = f[keep], y[keep]
        w = np.gradient(f) * 1.0
        w[0], w[-1] = (f[1] - f[0]) / 2, (f[-1] - f[-2]) / 2
        expect = np.sum((y * w)[f <= 50.0]) / np.sum(y * w)
        assert got[name] == pytest.approx(expect, rel=1e-12), name


def test_cp_fraction_uses_each_runs_own_windows(tmp_path) -> None:
    """Nothing in the SQL fixes a window: a run written with 20–60 of 20–1000 cm⁻¹ (default.toml's)
    gets its cp_fraction over those, a default run over the defaults, side by side."""
    a = step_amplitude(0.3)
    y = np.where(STEP_FREQ <= 50.0, a, 1.0)
    meta = dict(formula="X", temperature_k=600.0, n_atoms=8, mlff="m", reference_method="r", n_train=10)
    write_run(tmp_path, "c", "own", "r1", meta={**meta, "omega_min_cm1": 20.0, "omega_c_cm1": 60.0,
                                                 "host_low_cm1": 80.0, "host_high_cm1": 1000.0},
              spectrum={"freq_cm1": STEP_FREQ, "intensity": y})
    write_run(tmp_path, "c", "default", "r1", meta=meta, spectrum={"freq_cm1": STEP_FREQ, "intensity": y})
    got = {r[0]: r[1:] for r in connect(tmp_path).execute(
        "SELECT material, cp_fraction, cp_lo_cm1, cp_hi_cm1, cp_top_cm1 FROM central_peak").fetchall()}
    # 20..60 of 20..1000 on the 1 cm^-1 grid: bins 20 (weight 1/2), 21..50 at a, 51..60 and 61..999 at 1, 1000 (1/2)
    expect = (0.5 * a + 30 * a + 10) / (0.5 * a + 30 * a + 10 + 939 + 0.5)
    assert got["own"] == (pytest.approx(expect, rel=1e-12), 20.0, 60.0, 1000.0)
    assert got["default"] == (pytest.approx(0.3, rel=1e-12), 5.0, 50.0, 1000.0)
    text = views_sql()
    view = text[text.index("CREATE OR REPLACE VIEW central_peak AS"):text.index("CREATE OR REPLACE VIEW mobile_transport")]
    code = "\n".join(line.split("--")[0] for line in view.splitlines())
    literals = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", code))
    assert literals <= {"2.0", "0"}, f"numbers in the central_peak view (a hard-coded window?): {literals}"


def test_ranking_uses_the_thresholds_and_metric_each_run_recorded(tmp_path) -> None:
    """A run records its campaign's [ranking]; the ranking classifies it with those, unless told otherwise."""
    write_step_run(tmp_path, "strict", "A", 0.3, 2e-5, d_liquid_cm2_s=1e-4, d_hopping_cm2_s=1e-6, cp_threshold=0.5,
                   rank_metric="lowfreq_to_host_ratio")
    con = connect(tmp_path)
    (row,) = ranking(con, "strict")
    assert row["metric"] == "lowfreq_to_host_ratio" and row["metric_value"] == pytest.approx(3.0)
    assert row["conduction"] == "hopping" and row["central_peak"] is True  # 3.0 ≥ 0.5
    assert row["thresholds"] == Thresholds(metric="lowfreq_to_host_ratio", d_liquid_cm2_s=1e-4, d_hopping_cm2_s=1e-6,
                                           cp_threshold=0.5)
    (default,) = ranking(con, "strict", thresholds=Thresholds())
    assert default["metric"] == "cp_fraction" and default["conduction"] == "liquid-like"
    assert default["central_peak"] is True  # cp_fraction 0.3 ≥ 0.25


# --------------------------------------------------------------------------- ranking


def test_ranking_order_spearman_and_classes(step_root) -> None:
    from scipy.stats import permutation_test, spearmanr

    con = connect(step_root)
    rows = ranking(con, "steps")
    assert [r["material"] for r in rows] == ["A", "B", "C", "D", "E"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["metric_value"] for r in rows] == pytest.approx([0.6, 0.4, 0.2, 0.1, 0.05])
    # D = 5e-6 and 1e-7 sit exactly on the thresholds: "at or above" is the stated rule.
    assert [r["conduction"] for r in rows] == ["liquid-like", "liquid-like", "hopping", "liquid-like", "non-conducting"]
    assert [r["central_peak"] for r in rows] == [True, True, False, False, False]
    assert [r["consistent"] for r in rows] == [True, True, True, False, True]
    assert all(r["mobile_species"] == "Na" for r in rows)
    # Ranks of cp: A1 B2 C3 D4 E5; of D: A1 D2 B3 C4 E5 -> sum d^2 = 6, rho = 1 - 6*6/(5*24) = 0.7.
    s = summarize(rows)
    assert s.n == 5 and s.spearman_rho == pytest.approx(0.7)
    cps, ds = [r["metric_value"] for r in rows], [r["D_cm2_s"] for r in rows]
    ref = permutation_test((cps, ds), lambda x, y: spearmanr(x, y).statistic, permutation_type="pairings",
                           n_resamples=np.inf, alternative="two-sided")
    assert s.spearman_p == pytest.approx(ref.pvalue)
    # Other thresholds move the classes.
    strict = ranking(con, "steps", thresholds=Thresholds(d_liquid_cm2_s=1e-5, d_hopping_cm2_s=1e-6, cp_threshold=0.5))
    assert [r["conduction"] for r in strict] == ["liquid-like", "hopping", "non-conducting", "hopping", "non-conducting"]
    assert [r["central_peak"] for r in strict] == [True, False, False, False, False]


def test_ranking_by_a_descriptor_and_bad_metric(step_root) -> None:
    con = connect(step_root)
    rows = ranking(con, metric="lowfreq_to_host_ratio")
    assert [r["material"] for r in rows] == ["D", "A", "B", "C", "E"]
    assert rows[0]["metric"] == "lowfreq_to_host_ratio" and rows[0]["metric_value"] == 10.0
    with pytest.raises(InputError, match="unknown ranking metric") as info:
        ranking(con, metric="nope")
    assert "lowfreq_to_host_ratio" in str(info.value)
    with pytest.raises(InputError, match="not a column name"):
        ranking(con, metric="x; DROP VIEW spectra")
    with pytest.raises(InputError, match="no committed runs for campaign 'missing'"):
        ranking(con, "missing")
    with pytest.raises(InputError, match="d_hopping"):
        Thresholds(d_liquid_cm2_s=1e-7, d_hopping_cm2_s=1e-6)


def test_mobile_species_defaults_to_the_fastest(tmp_path) -> None:
    write_run(tmp_path, "c", "LLZO", "r1",
              meta=dict(formula="Li7La3Zr2O12", temperature_k=900, n_atoms=192, mlff="chgnet", reference_method="x",
                        n_train=10),
              spectrum={"freq_cm1": STEP_FREQ, "intensity": np.ones_like(STEP_FREQ)},
              transport=[{"species": "O", "D_cm2_s": 1e-9}, {"species": "Li", "D_cm2_s": 7e-6},
                         {"species": "La", "D_cm2_s": 1e-10}])
    (row,) = ranking(connect(tmp_path))
    assert (row["mobile_species"], row["D_cm2_s"], row["conduction"]) == ("Li", 7e-6, "liquid-like")
    assert summarize([row]).spearman_rho is None


def test_campaigns_are_ranked_separately_and_together(paper_root) -> None:
    con = connect(paper_root)
    quick = ranking(con, "quick")
    assert [r["material"] for r in quick] == ["AgI", "Na3PS4", "Na3SbS4-W", "Na3SbS4"]
    assert [r["conduction"] for r in quick] == ["liquid-like", "liquid-like", "hopping", "non-conducting"]
    assert summarize(quick).spearman_rho == pytest.approx(1.0)
    both = ranking(con)
    assert len(both) == 5 and {r["campaign"] for r in both} == {"quick", "other"}
    (other,) = ranking(con, "other")
    assert other["D_cm2_s"] == pytest.approx(1.4e-5)


# --------------------------------------------------------------------------- read-only SQL


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM transport",
        "COPY transport TO '{root}/stolen.csv'",
        "COPY (SELECT * FROM spectra) TO '{root}/spectra/x.parquet' (FORMAT parquet)",
        "CREATE TABLE t AS SELECT * FROM transport",
        "CREATE OR REPLACE VIEW transport AS SELECT 1",
        "DROP VIEW transport",
        "INSERT INTO transport SELECT * FROM transport",
        "UPDATE transport SET D_cm2_s = 1",
        "INSTALL httpfs",
        "LOAD httpfs",
        "ATTACH '{root}/x.db'",
        "SET enable_external_access = true",
        "SET VARIABLE results_root = '/etc'",
        "PRAGMA enable_profiling",
        "EXPORT DATABASE '{root}/dump'",
        "EXPLAIN ANALYZE DELETE FROM transport",
        "SELECT 1; DELETE FROM transport",
    ],
)
def test_query_refuses_anything_but_select(paper_root, statement) -> None:
    before = tree_digest(paper_root)
    con = connect(paper_root)
    with pytest.raises(InputError) as info:
        run_query(con, statement.format(root=paper_root))
    assert "\n" not in str(info.value)
    assert info.value.field == "query"
    assert run_query(con, "SELECT count(*) FROM transport").rows == [(10,)]
    assert tree_digest(paper_root) == before


def test_query_reads_views_but_no_files_outside_the_root(paper_root) -> None:
    con = connect(paper_root)
    res = run_query(con, "SELECT material, round(cp_fraction, 3) AS cp FROM screening WHERE campaign = 'quick' "
                         "ORDER BY cp DESC")
    assert res.columns == ["material", "cp"] and [r[0] for r in res.rows] == list(SYNTHETIC)
    assert run_query(con, "EXPLAIN SELECT * FROM spectra").columns
    assert run_query(con, "EXPLAIN ANALYZE SELECT count(*) FROM spectra").rows
    assert "cp_fraction" in [r[0] for r in run_query(con, "DESCRIBE screening").rows]
    assert run_query(con, "SELECT * FROM msd", limit=5).truncated
    with pytest.raises(InputError, match="table function read_csv"):
        run_query(con, "SELECT * FROM read_csv('/etc/passwd')")
    # The sandbox is locked: even the raw connection cannot lift it.
    with pytest.raises(duckdb.Error, match="locked"):
        con.execute("SET enable_external_access = true")
    with pytest.raises(InputError, match="cannot parse"):
        check_read_only("SELEC 1")


@pytest.fixture
def prefect_root(tmp_path) -> Path:
    """A results root that also holds a Prefect server's files, as a campaign leaves it."""
    root = tmp_path / "root"
    write_step_run(root, "c", "A", 0.5, 1e-5)
    (root / "_prefect" / "server").mkdir(parents=True)
    (root / "_prefect" / "server" / "prefect.db").write_text("secret api key")
    (root / "logs").mkdir()
    (root / "logs" / "c.log").write_text("secret log line")
    return root


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM read_text('{root}/_prefect/server/prefect.db')", "table function read_text()"),
        ("SELECT content FROM read_blob('{root}/logs/c.log')", "table function read_blob()"),
        ("SELECT * FROM glob('{root}/**')", "table function glob()"),
        ("SELECT * FROM glob('{cwd}/.tmp/*')", "table function glob()"),
        ("SELECT * FROM read_csv('{root}/logs/c.log')", "table function read_csv()"),
        ("SELECT * FROM read_parquet('{root}/spectra/**/*.parquet')", "table function read_parquet()"),
        ("SELECT * FROM '{root}/logs/c.log'", "reading the file"),
        ("WITH x AS (SELECT * FROM read_text('{root}/logs/c.log')) SELECT * FROM x", "table function read_text()"),
        ("SELECT * FROM transport WHERE species IN (SELECT filename FROM glob('/etc/*'))", "table function glob()"),
        ("EXPLAIN SELECT * FROM read_text('/etc/passwd')", "table function read_text()"),
    ],
)
def test_query_reads_only_the_views(prefect_root, sql, message) -> None:
    """The issue-11 escapes: read_text/glob over _prefect/, logs, DuckDB's .tmp/ outside the root."""
    con = connect(prefect_root)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        run_query(con, sql.format(root=prefect_root, cwd=Path.cwd()))
    assert "\n" not in str(info.value) and info.value.field == "query"
    assert "views" in str(info.value)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_text('{root}/_prefect/server/prefect.db')",
        "SELECT * FROM glob('{root}/*')",
        "SELECT * FROM read_text('{root}/logs/c.log')",
        "COPY (SELECT 1 AS a) TO '{root}/stolen.csv'",
        "COPY (SELECT 1 AS a) TO '{root}/spectra/x.parquet' (FORMAT parquet)",
        "ATTACH '{root}/x.db'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "SET temp_directory = '{root}'",
        "SET memory_limit = '1TB'",
    ],
)
def test_the_connection_itself_is_confined(prefect_root, sql) -> None:
    """Below the statement check: the raw connection opens only the committed data files."""
    before = tree_digest(prefect_root)
    con = connect(prefect_root)
    with pytest.raises(duckdb.Error):
        con.execute(sql.format(root=prefect_root)).fetchall()
    assert con.execute("SELECT count(*) FROM transport").fetchall() == [(2,)]
    assert tree_digest(prefect_root) == before
    assert not (prefect_root / "stolen.csv").exists() and not (prefect_root / "x.db").exists()


def test_query_temp_dir_is_private_and_memory_is_capped(prefect_root, monkeypatch) -> None:
    monkeypatch.setenv("RAMANSCREEN_QUERY_MEMORY_LIMIT", "300MB")
    con = connect(prefect_root)
    temp = Path(run_query(con, "SELECT current_setting('temp_directory')").rows[0][0])
    assert temp.is_dir() and temp.name.startswith("ramanscreen-query-")
    assert Path.cwd() not in temp.parents and prefect_root not in temp.parents
    assert list(temp.iterdir()) == []
    limit = run_query(con, "SELECT current_setting('memory_limit')").rows[0][0]
    assert limit.replace(" ", "") in ("286.1MiB", "300.0MB", "286MiB"), limit
    con.close()
    del con
    import gc

    gc.collect()
    assert not temp.exists()  # removed with the connection


def test_query_is_interrupted_at_the_time_limit(prefect_root, monkeypatch) -> None:
    import time

    con = connect(prefect_root)
    t0 = time.monotonic()
    with pytest.raises(InputError, match="interrupted after the time limit of 0.5 s") as info:
        run_query(con, "SELECT count(*) FROM range(100000000000)", timeout_s=0.5)
    assert time.monotonic() - t0 < 10
    assert info.value.field == "query_timeout_s"
    assert run_query(con, "SELECT count(*) FROM transport").rows == [(2,)]  # the connection still works
    # The default comes from the settings (one definition), here through the environment.
    from ramanscreen.tasks.settings import Settings

    assert Settings().query_timeout_s == 60.0
    monkeypatch.setenv("RAMANSCREEN_QUERY_TIMEOUT_S", "0.3")
    with pytest.raises(InputError, match="time limit of 0.3 s"):
        run_query(con, "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b")


def test_cli_query_refuses_glob_and_is_time_limited(prefect_root) -> None:
    out = cli("query", f"SELECT * FROM glob('{prefect_root}/_prefect/*')", "-r", str(prefect_root))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "error: query: table function glob() is not available here" in out.stderr
    slow = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "query", "SELECT count(*) FROM range(100000000000)",
                           "-r", str(prefect_root)], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RAMANSCREEN_QUERY_TIMEOUT_S": "1"})
    assert slow.returncode == 2 and "interrupted after the time limit of 1 s" in slow.stderr, slow.stderr


# --------------------------------------------------------------------------- roots and the SQL file


def test_malformed_results_roots_give_one_line_errors(tmp_path, paper_root) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    junk = tmp_path / "junk"
    (junk / "stuff").mkdir(parents=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    for root, text in ((tmp_path / "missing", "does not exist"), (afile, "is a file"),
                       (empty, "no committed ramanscreen runs"), (junk, "no committed ramanscreen runs")):
        with pytest.raises(InputError, match=text):
            connect(root)
    # A damaged Parquet file: one line naming the root, not a DuckDB traceback.
    broken = tmp_path / "broken"
    write_step_run(broken, "c", "A", 0.5, 1e-5)
    victim = next((broken / "spectra").rglob("*.parquet"))
    victim.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(InputError, match="cannot read the results") as info:
        ranking(connect(broken))
    assert "\n" not in str(info.value) and str(broken) in str(info.value)


def test_views_sql_runs_as_the_duckdb_cli_would(paper_root, tmp_path, monkeypatch) -> None:
    # `duckdb -cmd "SET VARIABLE results_root = '<root>'" -cmd ".read analytics/views.sql"`
    con = duckdb.connect()
    con.execute(f"SET VARIABLE results_root = '{paper_root}'")
    con.execute(views_sql())
    assert con.execute("SELECT count(*) FROM screening").fetchall() == [(5,)]
    # Without the SET the root defaults to ./results.
    (tmp_path / "results").symlink_to(paper_root, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    con = duckdb.connect()
    con.execute((REPO / "analytics" / "views.sql").read_text())
    assert con.execute("SELECT count(*) FROM materials").fetchall() == [(5,)]


def test_newer_schema_version_is_refused(tmp_path, monkeypatch) -> None:
    from ramanscreen.tasks import results

    monkeypatch.setattr(results, "SCHEMA_VERSION", 99)
    write_step_run(tmp_path, "c", "A", 0.5, 1e-5)
    monkeypatch.undo()
    with pytest.raises(InputError, match="schema version 99"):
        connect(tmp_path)


# --------------------------------------------------------------------------- report and CLI


def test_write_report_files(paper_root, tmp_path) -> None:
    paths = write_report(paper_root, "quick", tmp_path / "rep")
    for key in ("scatter_png", "spectra_png"):
        data = paths[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, key
    csv = paths["ranking_csv"].read_text().splitlines()
    assert csv[0].startswith("rank,campaign,material") and len(csv) == 5
    assert [line.split(",")[2] for line in csv[1:]] == list(SYNTHETIC)
    md = paths["ranking_md"].read_text()
    assert "Spearman(cp_fraction, D) = +1.000" in md and "liquid-like: D ≥ 5e-06 cm²/s" in md
    import json

    summary = json.loads(paths["summary_json"].read_text())
    assert summary["n_runs"] == 4 and summary["spearman_rho"] == pytest.approx(1.0)
    again = write_report(paper_root, "quick", tmp_path / "rep")
    assert again == paths
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(p.name for p in paths.values())


def test_cli_rank_prints_table_and_writes_plots(paper_root, tmp_path) -> None:
    out = cli("rank", "--results-root", str(paper_root), "--campaign", "quick", "--out-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    order = [next(i for i, ln in enumerate(lines) if f" {name} " in ln) for name in SYNTHETIC]
    assert order == sorted(order)
    assert "Spearman(cp_fraction, D) = +1.000" in out.stdout
    assert "non-conducting: D < 1e-07" in out.stdout
    assert (tmp_path / "r" / "central_peak_vs_D.png").is_file()
    assert (tmp_path / "r" / "spectra_overlay.png").is_file()


def test_cli_query_and_refusals(paper_root, tmp_path) -> None:
    ok = cli("query", "SELECT material, species FROM mobile_transport WHERE campaign = 'quick' ORDER BY material",
             "--results-root", str(paper_root))
    assert ok.returncode == 0, ok.stderr
    assert "Na3SbS4-W" in ok.stdout and "4 rows" in ok.stdout
    target = tmp_path / "out.csv"
    for sql in ("DELETE FROM spectra", f"COPY spectra TO '{target}'", "CREATE TABLE x AS SELECT 1"):
        bad = cli("query", sql, "--results-root", str(paper_root))
        assert bad.returncode == 2, bad.stdout
        assert bad.stderr.count("\n") == 1 and "only read queries" in bad.stderr
    assert not target.exists()
    for args in (["rank", "-r", str(tmp_path / "nowhere")], ["query", "SELECT 1", "-r", str(tmp_path)]):
        bad = cli(*args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:"), bad.stderr


def test_duckdb_shell_reads_the_same_views(paper_root) -> None:
    """docs/results.md's recipe, run with the real `duckdb` shell (test extra `duckdb-cli`)."""
    import shutil

    exe = Path(sys.executable).with_name("duckdb")
    exe = str(exe) if exe.exists() else shutil.which("duckdb")
    if exe is None:
        pytest.skip("the duckdb shell is not installed (pip install duckdb-cli)")
    out = subprocess.run(
        [exe, "-csv", "-cmd", f"SET VARIABLE results_root = '{paper_root}'", "-cmd", ".read analytics/views.sql",
         "-c", "SELECT material, mobile_species FROM screening WHERE campaign = 'quick' ORDER BY cp_fraction DESC"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["material,mobile_species", "AgI,Ag", "Na3PS4,Na", "Na3SbS4-W,Na", "Na3SbS4,Na"]


def test_cli_query_formats_for_scripts(paper_root, tmp_path) -> None:
    """query --format csv|json to stdout, and --out FILE for csv/json/parquet: the same rows."""
    import json

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    sql = "SELECT material, D_cm2_s, cp_fraction FROM screening WHERE campaign = 'quick' ORDER BY material"
    expect = [tuple(r) for r in connect(paper_root).execute(sql).fetchall()]
    as_json = cli("query", sql, "-r", str(paper_root), "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [(r["material"], r["D_cm2_s"], r["cp_fraction"]) for r in rows] == expect
    as_csv = cli("query", sql, "-r", str(paper_root), "--format", "csv")
    assert as_csv.returncode == 0 and as_csv.stdout.splitlines()[0] == '"material","D_cm2_s","cp_fraction"'
    for suffix in ("csv", "json", "parquet"):
        target = tmp_path / f"out.{suffix}"
        res = cli("query", sql, "-r", str(paper_root), "--out", str(target))  # the suffix picks the format
        assert res.returncode == 0, res.stderr
        if suffix == "parquet":
            got = pq.read_table(target).to_pylist()
        elif suffix == "csv":
            got = pacsv.read_csv(target).to_pylist()
        else:
            got = json.loads(target.read_text())
        assert [(r["material"], r["D_cm2_s"], r["cp_fraction"]) for r in got] == expect, suffix
    bad = cli("query", sql, "-r", str(paper_root), "--format", "parquet")
    assert bad.returncode == 2 and "--out" in bad.stderr and bad.stderr.count("\n") == 1
    bad = cli("query", sql, "-r", str(paper_root), "--format", "xml")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --format: unknown format"), bad.stderr


def test_rank_on_a_narrow_terminal_shows_every_number_whole(paper_root, tmp_path) -> None:
    """An 80-column terminal gets one column per material instead of cut numbers ("3.90…")."""
    from rich.console import Console
    from typer.testing import CliRunner

    from ramanscreen.flows.cli import app
    from ramanscreen.flows.commands import analytics as cmd

    wide = cmd.out
    try:
        cmd.out = Console(width=80, record=True, highlight=False, soft_wrap=False)
        res = CliRunner().invoke(app, ["rank", "--results-root", str(paper_root), "--campaign", "quick",
                                       "--out-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
        text = cmd.out.export_text()
    finally:
        cmd.out = wide
    assert "…" not in "".join(ln for ln in text.splitlines() if "D (cm²/s)" in ln or "±D" in ln)
    con = connect(paper_root)
    d = [r[0] for r in con.execute("SELECT D_cm2_s FROM mobile_transport WHERE campaign = 'quick'").fetchall()]
    con.close()
    shown = re.findall(r"\d\.\d\de-\d\d", text)
    assert d and all(f"{x:.2e}" in shown for x in d), (d, shown)
    assert max(len(ln) for ln in text.splitlines()) <= 80
