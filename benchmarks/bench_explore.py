"""Active vs random selection in the closed loop (ramanscreen.tasks.explore), on a synthetic oracle.

The oracle is **synthetic** (not a measurement, not DFT, not MD): an Arrhenius law for
Li7−xLa3Zr2−xTaxO12 whose activation energy has a composition optimum and whose activation
volume makes pressure slow conduction,

    log10 σ(x, T, P) = log10 σ0 − [Ea(x) + ΔV·P] / (ln 10 · k_B T)
    Ea(x) = 0.42 eV − 0.12 eV · exp(−((x − 0.55)/0.22)²),  σ0 = 10³ S/cm,  ΔV = 0.25 eV/GPa (≈ 4 Å³),

over x ∈ [0, 1], T ∈ [298, 573] K, P ∈ [0.01, 0.5] GPa (the seed's ranges).

For each seed both strategies start from the same Latin-hypercube design and spend the same
budget in batches; "active" picks by the GP's predictive std with the kriging-believer batch
rule, "random" picks uniformly from the same candidate pool. After every refit the surrogate
is scored on a fixed held-out set (400 random points). The table gives the evaluations each
strategy needed to reach the held-out RMSE goal and their ratio (random / active); a strategy
that never reaches it within the budget is counted at the budget (so the ratio is a lower
bound). Exit status 1 when active selection is not better (mean ratio ≤ 1).

    python benchmarks/bench_explore.py [--seeds 5] [--budget 40] [--goal 0.12]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings

import numpy as np

from ramanscreen.tasks.explore import DesignSpace, ExploreLoop, ExploreSettings
from ramanscreen.tasks.surrogate import SurrogateSettings, feature_matrix

K_B_EV = 8.617333262e-5
SPACE = DesignSpace("Li{7-x}La3Zr{2-x}Ta{x}O12", (0.0, 1.0), (298.0, 573.0), (0.01, 0.5), x_decimals=3)


def log10_sigma(x, t, p):
    """The synthetic oracle, log10 σ in S/cm."""
    ea = 0.42 - 0.12 * np.exp(-(((np.asarray(x) - 0.55) / 0.22) ** 2))
    return 3.0 - (ea + 0.25 * np.asarray(p)) / (math.log(10.0) * K_B_EV * np.asarray(t))


def run(strategy: str, seed: int, budget: int, batch: int, test: np.ndarray) -> list[tuple[int, float]]:
    settings = ExploreSettings(
        target="sigma_S_cm", initial_points=8, batch_size=batch, budget=budget, seed=seed,
        acquisition=ExploreSettings().acquisition if strategy == "active" else "random", pool_size=512,
        surrogate=SurrogateSettings(n_trials=6, cv_folds=4, seed=seed, families=("rbf", "matern2.5"), allow_ard=True),
    )
    y_test = log10_sigma(test[:, 0], test[:, 1], test[:, 2])
    forms = [SPACE.formula(x) for x in test[:, 0]]
    curve: list[tuple[int, float]] = []

    def on_round(model, row):
        X = feature_matrix(forms, test[:, 1], test[:, 2], model.elements)
        pred = model.pipeline.predict(X)
        curve.append((row["n_train"], float(np.sqrt(np.mean((pred - y_test) ** 2)))))

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop = ExploreLoop(SPACE, settings, d)
        loop.run(lambda p: 10.0 ** float(log10_sigma(p.x, p.temperature_k, p.pressure_gpa)), callback=on_round)
    return curve


def evals_to_goal(curve: list[tuple[int, float]], goal: float, budget: int) -> tuple[int, bool]:
    for n, rmse in curve:
        if rmse <= goal:
            return n, True
    return budget, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--goal", type=float, default=0.12, help="held-out RMSE goal, log10(S/cm)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        test = SPACE.from_unit(np.random.default_rng(10_000 + seed).random((400, 3)))
        res = {s: run(s, seed, args.budget, args.batch, test) for s in ("active", "random")}
        na, oka = evals_to_goal(res["active"], args.goal, args.budget)
        nr, okr = evals_to_goal(res["random"], args.goal, args.budget)
        rows.append((seed, na, oka, nr, okr, res["active"][-1][1], res["random"][-1][1]))
        print(f"seed {seed}: active {na}{'' if oka else '+'}, random {nr}{'' if okr else '+'} evaluations "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"synthetic oracle (Arrhenius, composition optimum); goal: held-out RMSE ≤ {args.goal} log10(S/cm); "
          f"budget {args.budget}, batch {args.batch}")
    print(f"{'seed':>4} {'active evals':>13} {'random evals':>13} {'ratio r/a':>10} {'final RMSE a':>13} {'final RMSE r':>13}")
    ratios = []
    for seed, na, oka, nr, okr, fa, fr in rows:
        ratio = nr / na
        ratios.append(ratio)
        print(f"{seed:>4} {na:>12}{'' if oka else '+'} {nr:>12}{'' if okr else '+'} {ratio:>10.2f} {fa:>13.3f} {fr:>13.3f}")
    mean = float(np.mean(ratios))
    print(f"mean ratio random/active = {mean:.2f} (geometric {float(np.exp(np.mean(np.log(ratios)))):.2f}); "
          f"'+' = goal not reached within the budget; {time.perf_counter() - t0:.0f} s")
    if not mean > 1.0:
        print("FAIL: active selection did not reach the goal with fewer evaluations than random selection")
        return 1
    print("OK: active selection needs fewer evaluations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
