"""Closed-loop logic with a cheap analytic oracle: design space, Latin hypercube, acquisition,
batch diversity, budget and uncertainty stops, persistence and resume after a kill."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from ramanscreen.tasks import explore as xp
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.surrogate import SurrogateSettings

SPACE = xp.DesignSpace("Li{7-x}La3Zr{2-x}Ta{x}O12", (0.0, 1.0), (300.0, 600.0), (0.0, 0.5), x_decimals=2)
FAST = SurrogateSettings(n_trials=3, cv_folds=3, families=("rbf",), allow_ard=False)


def oracle(p: xp.Proposal) -> float:
    """Synthetic: Arrhenius with an activation-energy minimum at x = 0.5 (not a measurement)."""
    ea = 0.45 - 0.1 * math.exp(-(((p.x - 0.5) / 0.25) ** 2)) + 0.2 * p.pressure_gpa
    return 10 ** (3.0 - ea / (math.log(10) * 8.617e-5 * p.temperature_k))


def test_design_space_and_lhs():
    assert SPACE.formula(1.0) == "Li6La3ZrTaO12"
    pts = SPACE.latin_hypercube(10, seed=1)
    u = SPACE.to_unit(pts)
    # a Latin hypercube has one point in each of the 10 strata of every dimension
    for d in (1, 2):
        assert sorted(np.floor(u[:, d] * 10).astype(int).tolist()) == list(range(10))
    assert ((pts[:, 0] >= 0) & (pts[:, 0] <= 1)).all()
    with pytest.raises(InputError, match="x_range"):
        xp.DesignSpace("Li{7-x}La3Zr{2-x}Ta{x}O12", (0.0, 2.5))
    with pytest.raises(InputError, match="unknown key"):
        xp.DesignSpace.from_mapping({"formula_template": "Li{7-x}La3Zr{2-x}Ta{x}O12", "xrange": [0, 1]}, file="e.toml")
    s = xp.DesignSpace.from_mapping({"formula_template": "Li{7-x}La3Zr{2-x}Ta{x}O12", "x_range": [0, 0.5],
                                     "temperature_k": [300, 300]})
    assert s.temperature_k == (300.0, 300.0) and (s.latin_hypercube(4)[:, 1] == 300).all()
    with pytest.raises(InputError, match="only numbers"):
        xp.DesignSpace("Li{__import__('os')}O")


def test_acquisitions():
    m = np.array([0.0, 1.0, 0.5])
    s = np.array([1.0, 0.1, 0.5])
    assert np.argmax(xp.acquisition_values("std", m, s)) == 0
    assert np.argmax(xp.acquisition_values("mean", m, s)) == 1
    ei = xp.acquisition_values("ei", m, s, best=1.0, xi=0.0)
    assert (ei >= 0).all() and np.argmax(ei) == 0


def test_loop_runs_to_budget_and_batches_are_diverse(tmp_path):
    st = xp.ExploreSettings(initial_points=6, batch_size=3, budget=12, surrogate=FAST, pool_size=256)
    loop = xp.ExploreLoop(SPACE, st, tmp_path)
    rounds_seen = []
    state = loop.run(oracle, callback=lambda model, row: rounds_seen.append(row["n_train"]))
    assert state.n_spent == 12 and len(state.by_status("done")) == 12
    assert "budget" in state.stop_reason and rounds_seen == [6, 9, 12]
    u = SPACE.to_unit(np.array([[p.x, p.temperature_k, p.pressure_gpa] for p in state.proposals]))
    d = np.sqrt(((u[:, None] - u[None]) ** 2).sum(-1)) + np.eye(len(u)) * 9
    assert d.min() >= st.min_distance - 1e-9  # no point repeated or crowded
    # active picks after the initial design carry the prediction they were chosen with
    later = [p for p in state.proposals if p.round > 0]
    assert all(p.acquisition == "imse" and p.predicted_std > 0 for p in later)
    props = pq.read_table(tmp_path / "proposals.parquet").to_pylist()
    rounds = pq.read_table(tmp_path / "rounds.parquet").to_pylist()
    assert len(props) == 12 and [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["cv_rmse"] >= 0 and r["max_pool_std"] > 0 for r in rounds)


def _first_pick(tmp_path, **kw):
    """The initial design evaluated, then the first single pick: (pick, model, pool scored)."""
    st = xp.ExploreSettings(initial_points=6, batch_size=1, budget=7, surrogate=FAST, diversity="none", pool_size=128,
                            **kw)
    loop = xp.ExploreLoop(SPACE, st, tmp_path)
    for p in loop.next_round():
        loop.record(p.proposal_id, oracle(p))
    (pick,) = loop.next_round()
    return pick, loop.last_model, SPACE.pool(st.pool_size, seed=st.seed + 1000 + 1)


def test_uncertainty_sampling_picks_the_most_uncertain_point(tmp_path):
    pick, model, pool = _first_pick(tmp_path, acquisition="std")
    _, std = model.predict([SPACE.formula(x) for x in pool[:, 0]], pool[:, 1], pool[:, 2])
    assert pick.predicted_std == pytest.approx(float(std.max()), rel=1e-6)


def test_imse_picks_the_largest_integrated_variance_reduction(tmp_path):
    """The pick maximises Σ_p Cov(p, c)² / Var(c) over the pool, computed here from sklearn's GP directly."""
    from ramanscreen.tasks.surrogate import feature_matrix

    assert xp.ExploreSettings().acquisition == "imse"
    pick, model, pool = _first_pick(tmp_path)
    X = model.pipeline.named_steps["scale"].transform(
        feature_matrix([SPACE.formula(x) for x in pool[:, 0]], pool[:, 1], pool[:, 2], model.elements))
    _, cov = model.pipeline.named_steps["gp"].predict(X, return_cov=True)
    score = (cov ** 2).sum(axis=0) / np.diag(cov)
    best = pool[int(np.argmax(score))]
    assert [pick.x, pick.temperature_k, pick.pressure_gpa] == pytest.approx(best.tolist())
    # not the same point as plain uncertainty sampling would take (the corner of the box)
    assert int(np.argmax(score)) != int(np.argmax(np.diag(cov)))


def test_target_std_stop(tmp_path):
    st = xp.ExploreSettings(initial_points=6, batch_size=2, budget=30, target_std=10.0, surrogate=FAST, pool_size=128)
    state = xp.ExploreLoop(SPACE, st, tmp_path).run(oracle)
    assert state.n_spent == 6 and "target_std" in state.stop_reason


def test_resume_after_kill_never_redoes_finished_work(tmp_path):
    st = xp.ExploreSettings(initial_points=6, batch_size=3, budget=12, surrogate=FAST, pool_size=256)
    calls: list[str] = []

    class Killed(BaseException):
        pass

    def dying(p):
        if len(calls) == 8:  # killed during the second batch, after two of its three evaluations
            raise Killed
        calls.append(p.proposal_id)
        return oracle(p)

    with pytest.raises(Killed):
        xp.ExploreLoop(SPACE, st, tmp_path).run(dying)
    assert len(calls) == 8
    resumed: list[str] = []
    loop = xp.ExploreLoop(SPACE, st, tmp_path)
    assert len(loop.pending()) == 1
    state = loop.run(lambda p: (resumed.append(p.proposal_id), oracle(p))[1])
    assert not set(calls) & set(resumed) and len(calls) + len(resumed) == 12
    assert sorted(p.proposal_id for p in state.proposals) == sorted(calls + resumed)
    # a finished evaluation cannot be recorded twice, and a state dir for another space is refused
    with pytest.raises(InputError, match="already done"):
        loop.record(calls[0], 1e-3)
    other = xp.DesignSpace("Li{7-x}La3Zr{2-x}Nb{x}O12", (0.0, 1.0))
    with pytest.raises(InputError, match="another design space"):
        xp.ExploreLoop(other, st, tmp_path)


def test_failed_evaluations_are_recorded_not_retried(tmp_path):
    st = xp.ExploreSettings(initial_points=6, batch_size=2, budget=10, surrogate=FAST, pool_size=128)
    tries: dict[str, int] = {}

    def flaky(p):
        tries[p.proposal_id] = tries.get(p.proposal_id, 0) + 1
        if p.proposal_id == "r000-002":
            raise RuntimeError("MD blew up")
        return oracle(p)

    state = xp.ExploreLoop(SPACE, st, tmp_path).run(flaky)
    failed = state.by_status("failed")
    assert [p.proposal_id for p in failed] == ["r000-002"] and "MD blew up" in failed[0].note
    assert max(tries.values()) == 1 and state.n_spent == 10


def test_active_beats_random_on_the_oracle(tmp_path):
    """A small version of benchmarks/bench_explore.py (one seed): held-out RMSE after the same budget."""
    from ramanscreen.tasks.surrogate import feature_matrix

    test = SPACE.from_unit(np.random.default_rng(5).random((200, 3)))
    y = np.array([math.log10(oracle(xp.Proposal("t", 0, *row, SPACE.formula(row[0]), "t"))) for row in test])
    forms = [SPACE.formula(x) for x in test[:, 0]]
    rmse = {}
    for strategy in (xp.ExploreSettings().acquisition, "random"):
        st = xp.ExploreSettings(initial_points=6, batch_size=3, budget=24, acquisition=strategy, surrogate=FAST,
                                pool_size=256, seed=3)
        final = {}

        def keep(model, row, final=final):
            final["rmse"] = float(np.sqrt(np.mean((model.pipeline.predict(
                feature_matrix(forms, test[:, 1], test[:, 2], model.elements)) - y) ** 2)))

        xp.ExploreLoop(SPACE, st, tmp_path / strategy).run(oracle, callback=keep)
        rmse[strategy] = final["rmse"]
    assert rmse["imse"] < rmse["random"], rmse
