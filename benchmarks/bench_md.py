"""MD speed with CHGNet for the paper's 128-atom cells, and ramanscreen's overhead over the model.

For each material the same process measures, back to back:

* **raw**: bare calls of the calculator on slightly displaced copies of the structure (no cache
  hits), half of them just before and half just after the MD so a changing machine load hits
  baseline and MD alike -- the cost of the model alone;
* **md**: :func:`tasks.md.run_md` for ``n`` production steps, writing every frame, with a
  checkpoint half-way -- everything a real run does.

It prints seconds per step, the ratio *MD wall time / sum of raw calculator calls* (goal <= 1.05,
i.e. overhead <= 5 %), and the same ratio against the calculator time measured inside the MD run.

    .venv/bin/python benchmarks/bench_md.py               # AgI and Na3SbS4, 20 steps each
    .venv/bin/python benchmarks/bench_md.py --steps 50 --threads 2 --calculator sevenn
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from tasks.md import MDSettings, get_calculator, run_md, set_num_threads
from tasks.structures import build_structure

#: (builder, temperature K, time step fs) as in the paper.
CASES = {"AgI": (500.0, 10.0), "Na3SbS4": (300.0, 2.0)}


def raw_calls_s(atoms, calc, n: int, seed: int = 0) -> np.ndarray:
    """Wall time of ``n`` bare force+energy calls, each on a freshly displaced copy."""
    rng = np.random.default_rng(seed)
    probe = atoms.copy()
    probe.calc = calc
    probe.get_forces()  # warm-up (lazy initialisation, first graph)
    times = np.empty(n)
    for k in range(n):
        probe.positions = atoms.positions + rng.normal(0.0, 0.02, atoms.positions.shape)
        t0 = time.perf_counter()
        calc.calculate(probe, ["energy", "forces"], ["positions"])
        times[k] = time.perf_counter() - t0
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calculator", default="chgnet")
    ap.add_argument("--materials", nargs="+", default=list(CASES))
    args = ap.parse_args()

    set_num_threads(args.threads)
    calc = get_calculator(args.calculator, num_threads=args.threads)
    table = Table(title=f"MD with {calc.ramanscreen_info['model']}, {args.steps} steps, {args.threads} threads")
    for col in ("material", "atoms", "raw s/call", "MD s/step", "MD / raw", "MD / in-run calc",
                "calls/step", "ps/day"):
        table.add_column(col, justify="right")
    for name in args.materials:
        temperature_k, dt_fs = CASES[name]
        atoms = build_structure(name)
        half = max(args.steps // 2, 2)
        raw_before = raw_calls_s(atoms, calc, half, seed=1)
        settings = MDSettings(temperature_k=temperature_k, dt_fs=dt_fs, steps=args.steps, write_every=1,
                              checkpoint_every=max(args.steps // 2, 1), calculator=args.calculator,
                              num_threads=args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            res = run_md(atoms, settings, tmp, calculator=calc)
        raw = np.concatenate([raw_before, raw_calls_s(atoms, calc, half, seed=2)])
        m = res.metadata
        wall = m["wall_time_s"]
        table.add_row(
            name, str(len(atoms)), f"{raw.mean():.3f} ± {raw.std(ddof=1):.3f}", f"{wall / args.steps:.3f}",
            f"{wall / (raw.mean() * args.steps):.3f}", f"{wall / m['calc_time_s']:.3f}", f"{m['calc_calls_per_step']:.2f}",
            f"{m['ps_per_day']:.1f}",
        )
    console = Console(width=120)
    console.print(table)
    console.print("ratio 1.000 = no overhead over the model; goal <= 1.050. 'raw': n x mean bare call, "
                    "timed in this run around the MD (sensitive to load on a shared machine); 'in-run calc': "
                    "time inside the model during the MD itself; calls/step 1.00 = no redundant model calls.")


if __name__ == "__main__":
    main()
