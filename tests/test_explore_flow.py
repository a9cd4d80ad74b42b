"""The explore flow (issue 14): ``ramanscreen explore FILE`` on the real stack.

Fast tests: the exploration file is validated before anything starts (one line naming the file
and the ``explore.*`` key, exit 2), and each proposal becomes a material of the campaign.
Slow test: the shipped ``llzo.toml`` loop at quick size — a real Prefect server, the Dask cluster,
CHGNet MD of 192-atom garnet cells, Parquet — killed after its first finished evaluation and
re-run: it continues, and no finished material run is redone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from campaign_helpers import CAMPAIGNS, api, kill_when, latest_artifacts, prefect_server, screen_env  # noqa: F401

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.explore import Proposal

LLZO = CAMPAIGNS / "llzo.toml"


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = LLZO.read_text()
    assert old in text, old
    path = tmp_path / "explore.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True, timeout=600)


def test_shipped_exploration_loads_with_and_without_quick() -> None:
    from ramanscreen.flows.explore import load_exploration

    full, quick = load_exploration(LLZO), load_exploration(LLZO, quick=True)
    assert (full.name, full.settings.budget, full.settings.batch_size) == ("llzo-explore", 12, 2)
    assert (quick.name, quick.settings.budget, quick.settings.initial_points) == ("llzo-quick-explore", 4, 3)
    assert quick.settings.surrogate.n_trials == 4 and quick.probe.materials[0].md.steps == 200
    assert full.state_dir == full.results_root / "explore" / "llzo-explore"
    # every x the loop can propose (9 cells, x = 0 ... 1 by 1/8) and the T-P corners were validated
    # as campaign materials
    probes = full.probe.materials
    assert len({m.structure for m in probes}) == 9 and {"Li7La3Zr2O12", "Li6La3ZrTaO12"} <= {m.structure for m in probes}
    assert {(m.temperature_k, m.md.pressure_gpa) for m in probes} == {
        (473.0, 0.01), (473.0, 0.5), (673.0, 0.01), (673.0, 0.5)}


def test_each_proposal_becomes_a_material_at_its_composition_T_and_P() -> None:
    from ramanscreen.flows.explore import load_exploration

    expl = load_exploration(LLZO, quick=True)
    p = Proposal(proposal_id="r001-000", round=1, x=0.25, temperature_k=600.0, pressure_gpa=0.2,
                 formula=expl.space.formula(0.25), acquisition="imse")
    (m,) = expl.round_campaign([p]).materials
    assert (m.name, m.structure, m.n_atoms, m.temperature_k, m.md.pressure_gpa, m.mobile) == (
        "r001-000", "Li6.75La3Zr1.75Ta0.25O12", 192, 600.0, 0.2, ("Li",))
    assert m.md.npt_first and m.md.steps == 200  # NPT at P first, then the quick production
    assert expl.round_campaign([p]).name == "llzo-quick-explore"


def test_x_is_snapped_to_what_one_cell_holds() -> None:
    from ramanscreen.flows.explore import load_exploration

    space = load_exploration(LLZO).space
    xs = space.latin_hypercube(16, seed=3)[:, 0]
    assert all(abs(x * 8 - round(x * 8)) < 1e-9 for x in xs), xs
    assert all(abs(x * 8 - round(x * 8)) < 1e-9 for x in space.pool(64, seed=1)[:, 0])


@pytest.mark.parametrize(("old", "new", "field"), [
    ("[explore.space]\n", "[explore.space]\ncutoff = 3\n", "explore.space.cutoff"),
    ("x_range = [0.0, 1.0]", "x_range = [1.0, 0.0]", "explore.space.x_range"),
    ("x_step = 0.125", "x_step = 0.3", "explore.space.x_step"),
    ("x_step = 0.125", "x_step = 0.0", "explore.space.x_step"),
    ('formula_template = "Li{7-x}La3Zr{2-x}Ta{x}O12"', 'formula_template = "Na{3-x}P{x}S4"',
     "explore.space.formula_template"),
    ("budget = 12", "budget = 2", "explore.loop.budget"),
    ("initial_points = 6", 'initial_points = 6\ntarget = "bulk_modulus_vrh_gpa"', "explore.loop.target"),
    ('[explore]\nn_atoms = 192\nmobile = ["Li"]', '[explore]\nn_atoms = 190\nmobile = ["Li"]', "explore.n_atoms"),
    ('[explore]\nn_atoms = 192\nmobile = ["Li"]', "[explore]\nn_atoms = 192", "explore.mobile"),
    ("[explore]\n", "[explore]\nseed = 3\n", "explore.seed"),
])
def test_bad_exploration_file_is_one_line_naming_the_key(tmp_path: Path, old: str, new: str, field: str) -> None:
    from ramanscreen.flows.explore import load_exploration

    path = _variant(tmp_path, old, new)
    with pytest.raises(InputError) as info:
        load_exploration(path)
    assert info.value.field == field, str(info.value)
    proc = _cli("explore", str(path), "--results-root", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and field in lines[0] and "fix:" in lines[0], proc.stderr
    assert not (tmp_path / "results").exists()  # nothing started, nothing written


def test_campaign_without_explore_table_is_refused(tmp_path: Path) -> None:
    proc = _cli("explore", str(CAMPAIGNS / "quick.toml"), "--results-root", str(tmp_path / "r"))
    assert proc.returncode == 2 and "explore: no [explore] table" in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def test_validate_checks_the_exploration_too(tmp_path: Path) -> None:
    proc = _cli("validate", str(LLZO))
    assert proc.returncode == 0, proc.stderr
    assert "exploration 'llzo-explore'" in proc.stdout and "exploration 'llzo-quick-explore' [quick profile]" in proc.stdout
    bad = _variant(tmp_path, "budget = 12", "budget = 2")
    proc = _cli("validate", str(bad))
    assert proc.returncode == 2 and "explore.loop.budget" in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------------- slow


def _proposals(state: Path) -> list[dict]:
    f = state / "proposals.parquet"
    return pq.read_table(f).to_pylist() if f.is_file() else []


#: The shipped quick loop with shorter runs: CHGNet takes ~4.5 s per 2-fs NPT step on a 192-atom
#: garnet cell with two workers on 2 cores, so llzo.toml's own --quick (420 steps a run) would take
#: over an hour here. 55 steps a run, with windows that 0.08 ps of α resolves (only the path is
#: tested; no number of it is physics).
SHORT_QUICK = ("[quick.md]\nequil_steps = 20\nsteps = 200\nnpt_steps = 200\ncheckpoint_every = 50",
               "[quick.md]\nequil_steps = 5\nsteps = 40\nnpt_steps = 10\ncheckpoint_every = 10\n\n[quick.spectrum]\n"
               "omega_min_cm1 = 1000.0\nomega_c_cm1 = 2000.0\nhost_window_cm1 = [2000.0, 4000.0]\n")


@pytest.mark.slow
@pytest.mark.timeout(2700)  # ~10 min measured on the 2-core machine; the suite's 900 s is for one run
def test_llzo_loop_runs_end_to_end_and_resumes_after_a_kill(prefect_server, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "results"
    state = root / "explore" / "llzo-quick-explore"
    cmd = [sys.executable, "-m", "ramanscreen.flows", "explore", str(_variant(tmp_path, *SHORT_QUICK)), "--quick"]
    env = screen_env(prefect_server, root)
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # kill as soon as the first evaluation is recorded, while the others still run
    kill_when(proc, lambda: any(p["status"] != "proposed" for p in _proposals(state)), timeout_s=1800, poll_s=0.5,
              what="the loop")
    before = {p["proposal_id"]: p for p in _proposals(state) if p["status"] != "proposed"}
    assert before and len(_proposals(state)) == 3  # the Latin hypercube, partly evaluated
    done_dirs = {pid: [f.stat().st_mtime_ns for f in sorted((root / "work" / "llzo-quick-explore").glob(f"{pid}*/**/md.traj"))]
                 for pid in before}

    proc2 = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=2400)
    assert proc2.returncode == 0, proc2.stderr[-4000:] + proc2.stdout[-3000:]
    props = _proposals(state)
    assert len(props) == 4 and {p["round"] for p in props} == {0, 1}, props
    assert all(p["status"] in ("done", "failed") for p in props)
    done = [p for p in props if p["status"] == "done"]
    assert len(done) >= 3 and all(p["value"] > 0 for p in done), props
    # nothing finished before the kill was evaluated again: same record, same trajectory files
    for pid, rec in before.items():
        again = next(p for p in props if p["proposal_id"] == pid)
        assert (again["status"], again["evaluated_at"], again["value"]) == (rec["status"], rec["evaluated_at"], rec["value"])
        now = [f.stat().st_mtime_ns for f in sorted((root / "work" / "llzo-quick-explore").glob(f"{pid}*/**/md.traj"))]
        assert now == done_dirs[pid]
    rounds = pq.read_table(state / "rounds.parquet").to_pylist()
    assert rounds[-1]["stop_reason"].startswith("budget of 4"), rounds
    assert all(r["cv_rmse"] is not None and r["cv_rmse"] >= 0 for r in rounds)
    assert (state / "surrogate" / "round_001.parity.png").is_file()
    # the material runs are one campaign in the results root: one row per done run, σ in SQL
    from ramanscreen.analytics.db import connect

    con = connect(root)
    try:
        rows = con.execute("SELECT material, count(*) FROM materials WHERE campaign = 'llzo-quick-explore' "
                           "GROUP BY material").fetchall()
        sig = dict(con.execute("SELECT material, sigma_S_cm FROM transport WHERE campaign = 'llzo-quick-explore' "
                               "AND species = 'Li'").fetchall())
    finally:
        con.close()
    assert sorted(m for m, _ in rows) == sorted(p["proposal_id"] for p in done) and all(n == 1 for _, n in rows)
    for p in done:
        assert abs(sig[p["proposal_id"]] - p["value"]) <= 1e-9 * p["value"]
    # Prefect: each round a subflow of the explore flow, with the proposals and parity artifacts
    flows = api(prefect_server, "/flow_runs/filter", {"flow_runs": {"name": {"like_": "round-"}}, "limit": 50})
    assert {"round-000", "round-001"} <= {f["name"] for f in flows}
    assert all(f["parent_task_run_id"] for f in flows)
    arts = latest_artifacts(prefect_server, ["explore-proposals-llzo-quick-explore", "explore-surrogate-llzo-quick-explore",
                                             "explore-rounds-llzo-quick-explore"])
    assert len(arts) == 3, sorted(arts)
    assert "data:image/png;base64," in arts["explore-surrogate-llzo-quick-explore"]["data"]
    assert "refits of the surrogate" in proc2.stdout and "budget of 4" in proc2.stdout
