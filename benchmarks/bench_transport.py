"""Benchmark: FFT MSD for 10⁴ frames × 128 atoms against baselines measured in the same run.

Baselines:
  * one ``numpy.fft.rfft`` pass over the same positions (zero-padded to 2F, all atoms × xyz):
    the floor any FFT-based MSD has to pay;
  * the direct multiple-origin MSD, O(F²): timed on an evenly spaced subset of lags and scaled
    to all F lags (its cost per lag is linear in the number of origins, so the subset average
    is representative).

Also times the full ``analyze_transport`` (blocks and kinisi) on the same trajectory for scale.

Run:  .venv/bin/python benchmarks/bench_transport.py [--frames 10000] [--atoms 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from ramanscreen.tasks.trajectory import Trajectory
    from ramanscreen.tasks.transport import analyze_transport, msd_fft

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--atoms", type=int, default=128)
    ap.add_argument("--direct-lags", type=int, default=40, help="lags timed for the direct O(F²) baseline")
    args = ap.parse_args()
    n_frames, n_atoms = args.frames, args.atoms

    rng = np.random.default_rng(0)
    pos = np.cumsum(rng.normal(0.0, 0.02, (n_frames, n_atoms, 3)), axis=0) + rng.uniform(0, 15, (n_atoms, 3))

    t_fft = best_of(lambda: msd_fft(pos))
    flat = pos.reshape(n_frames, -1)
    t_rfft = best_of(lambda: np.fft.rfft(flat, n=2 * n_frames, axis=0))

    lags = np.linspace(1, n_frames - 1, args.direct_lags).astype(int)

    def direct():
        return np.array([np.mean(np.sum((pos[m:] - pos[:-m]) ** 2, axis=-1)) for m in lags])

    t0 = time.perf_counter()
    ref = direct()
    t_direct = (time.perf_counter() - t0) * (n_frames - 1) / len(lags)
    err = float(np.max(np.abs(msd_fft(pos)[lags] - ref) / ref))

    traj = Trajectory(
        symbols=["Na"] * n_atoms, numbers=np.full(n_atoms, 11), masses_amu=np.full(n_atoms, 22.99),
        positions_A=pos % 15.0, cells_A=np.broadcast_to(np.eye(3) * 15.0, (n_frames, 3, 3)).copy(),
        pbc=np.ones(3, bool), dt_fs=2.0, velocities_A_fs=None, time_fs=np.arange(n_frames) * 2.0, source="bench",
    )
    t_blocks = best_of(lambda: analyze_transport(traj, species="Na", temperature_k=300, drift="none",
                                                 method="blocks"), repeat=1)
    t_kinisi = best_of(lambda: analyze_transport(traj, species="Na", temperature_k=300, drift="none",
                                                 method="kinisi"), repeat=1)

    table = Table(title=f"MSD of {n_frames} frames × {n_atoms} atoms (best of 3; max rel. diff FFT vs direct {err:.1e})")
    for col in ("what", "time (s)", "÷ one rfft pass", "speed-up vs direct"):
        table.add_column(col, justify="right")
    rows = [
        ("numpy rfft pass (baseline)", t_rfft),
        ("msd_fft (all F lags)", t_fft),
        (f"direct O(F²) (scaled from {len(lags)} lags)", t_direct),
        ("analyze_transport, method=blocks", t_blocks),
        ("analyze_transport, method=kinisi", t_kinisi),
    ]
    for name, t in rows:
        table.add_row(name, f"{t:.3f}", f"{t / t_rfft:.2f}", f"{t_direct / t:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
