"""Benchmark: ``raman_spectrum`` on 10⁶ α frames against one numpy rfft pass over seven series.

The baseline is measured in the same run, on series of the same length: ``numpy.fft.rfft`` of
a (7, n) float64 array along its last axis (one pass over seven series). The spectrum needs
six transforms (the λ=0 and five λ=2 components of α), so a ratio near 1 means that everything
else (the α decomposition, the power spectra, the Gaussian smoothing, the prefactors) is cheap.
Goal: ratio ≤ 1.5 with the default settings (σ = 4 cm⁻¹, full range up to Nyquist).

Timings: ``--repeats`` rounds, every case once per round (interleaved, so a load change on a
shared machine affects all cases). The table gives best time / best baseline time, and the
median over rounds of the per-round ratio (robust when the machine is busy). BLAS is limited to one thread (numpy's FFT is
single-threaded) so the comparison is like for like.

Run:  .venv/bin/python benchmarks/bench_spectra.py [--frames 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from threadpoolctl import threadpool_limits

from ramanscreen.tasks.common import CM1_PER_INV_FS
from ramanscreen.tasks.spectra import raman_spectrum


def make_alpha(n: int, dt_fs: float, seed: int = 0) -> np.ndarray:
    """A symmetric α series (Å³): a relaxational part plus two lines, built without Python loops over frames."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    phi = np.exp(-dt_fs / 300.0)
    comps = lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], rng.standard_normal((6, n)), axis=-1) * 0.2
    t = np.arange(n) * dt_fs
    comps[0] += 0.05 * np.cos(2 * np.pi * 350.0 / CM1_PER_INV_FS * t)
    comps[3] += 0.03 * np.cos(2 * np.pi * 120.0 / CM1_PER_INV_FS * t)
    alpha = np.empty((n, 3, 3))
    for c, (i, j) in enumerate(((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))):
        alpha[:, i, j] = comps[c]
        alpha[:, j, i] = comps[c]
    alpha += np.diag([40.0, 42.0, 44.0])
    return alpha


def time_interleaved(funcs: dict[str, object], repeats: int) -> dict[str, np.ndarray]:
    """Wall times (s) per case and repeat; within a repeat every case runs once, in turn."""
    times = {name: np.empty(repeats) for name in funcs}
    for r in range(repeats):
        for name, func in funcs.items():
            t0 = time.perf_counter()
            func()  # type: ignore[operator]
            times[name][r] = time.perf_counter() - t0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dt-fs", type=float, default=20.0, help="time between α samples (2 fs MD step × stride 10)")
    args = parser.parse_args()
    n, dt = args.frames, args.dt_fs

    alpha = make_alpha(n, dt)
    seven = np.random.default_rng(1).standard_normal((7, n))
    with threadpool_limits(1):
        raman_spectrum(alpha, dt)  # warm-up (imports, FFT plans)
        np.fft.rfft(seven, axis=-1)
        funcs = {
            "baseline: numpy.fft.rfft, 7 series (one pass)": lambda: np.fft.rfft(seven, axis=-1),
            "raman_spectrum (σ = 4 cm⁻¹, to Nyquist)": lambda: raman_spectrum(alpha, dt),
            "raman_spectrum (no smoothing)": lambda: raman_spectrum(alpha, dt, sigma_cm1=0.0),
            "raman_spectrum (σ = 4, max 600 cm⁻¹)": lambda: raman_spectrum(alpha, dt, max_freq_cm1=600.0),
            "reference: numpy.fft.rfft, 7 separate calls": lambda: [np.fft.rfft(row) for row in seven],
        }
        times = time_interleaved(funcs, args.repeats)

    base_name = "baseline: numpy.fft.rfft, 7 series (one pass)"
    goal_name = "raman_spectrum (σ = 4 cm⁻¹, to Nyquist)"
    base = times[base_name]
    width = max(len(k) for k in times)
    print(f"bench_spectra: {n} frames, dt = {dt:g} fs, {args.repeats} interleaved repeats, BLAS 1 thread, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("ratio = best time / best baseline time; paired = median over repeats of time / baseline time of that repeat")
    print(f"{'case':<{width}}  {'best (s)':>9}  {'ratio':>6}  {'paired':>6}  goal")
    for name, t in times.items():
        goal = "≤ 1.5" if name == goal_name else ""
        print(f"{name:<{width}}  {t.min():9.4f}  {t.min() / base.min():6.2f}  {np.median(t / base):6.2f}  {goal}")
    ratio = times[goal_name].min() / base.min()
    print(f"result: ratio {ratio:.2f} ({'meets' if ratio <= 1.5 else 'misses'} the goal ≤ 1.5)")


if __name__ == "__main__":
    main()
