"""MD speed with CHGNet for the paper's 128-atom cells, and ramanscreen's overhead over the model.

For each material the same process measures, back to back:

* **md**: :func:`ramanscreen.tasks.md.run_md` for ``n`` production steps, writing every frame, with a
  checkpoint half-way -- everything a real run does;
* **raw**: right after, bare calls of the same calculator on exactly the ``n`` structures the MD
  evaluated (its stored frames 1..n) -- the cost of the model alone, on identical input.

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
from ase.io import read
from rich.console import Console
from rich.table import Table

from ramanscreen.tasks.md import MDSettings, get_calculator, run_md, set_num_threads
from ramanscreen.tasks.structures import build_structure

#: (builder, temperature K, time step fs) as in the paper.
CASES = {"AgI": (500.0, 10.0), "Na3SbS4": (300.0, 2.0)}


def raw_calls_s(frames, calc) -> np.ndarray:
    """Wall time of one bare energy+forces call on each of ``frames``."""
    probe = frames[0].copy()
    probe.calc = calc
    times = np.empty(len(frames))
    for k, frame in enumerate(frames):
        probe.positions = frame.positions
        probe.cell = frame.cell
        t0 = time.perf_counter()
        calc.calculate(probe, ["energy", "forces"], ["positions", "cell"])
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
        settings = MDSettings(temperature_k=temperature_k, dt_fs=dt_fs, steps=args.steps, write_every=1,
                              checkpoint_every=max(args.steps // 2, 1), calculator=args.calculator,
                              num_threads=args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            res = run_md(atoms, settings, tmp, calculator=calc)
            raw = raw_calls_s(read(res.traj_path, index="1:"), calc)
        m = res.metadata
        wall = m["wall_time_s"]
        table.add_row(
            name, str(len(atoms)), f"{raw.mean():.3f} ± {raw.std(ddof=1):.3f}", f"{wall / args.steps:.3f}",
            f"{wall / raw.sum():.3f}", f"{wall / m['calc_time_s']:.3f}", f"{m['calc_calls_per_step']:.2f}",
            f"{m['ps_per_day']:.1f}",
        )
    console = Console(width=120)
    console.print(table)
    console.print("ratio 1.000 = no overhead over the model; goal <= 1.050. 'raw': bare calls on the "
                    "same n structures right after the MD (sensitive to load on a shared machine); 'in-run calc': "
                    "time inside the model during the MD itself; calls/step 1.00 = no redundant model calls.")


if __name__ == "__main__":
    main()
