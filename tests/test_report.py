"""The HTML campaign report: written by ``ramanscreen report`` from a real results root (Parquet
through the real writer, DuckDB views), every figure embedded, the provenance and the runs'
limits stated; and, in headless Chromium, every image decodes and the screenshot shows them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_results import SYNTHETIC, write_synthetic

from ramanscreen.analytics.html_report import NOT_RECORDED, PARITY_FIGURES, known_limits


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for name in SYNTHETIC:
        write_synthetic(root, "rep", name)
    return root


def _report(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", "report", "-r", str(root), *args],
                          capture_output=True, text=True, timeout=300)


def test_report_command_writes_one_self_contained_page(tmp_path: Path) -> None:
    root = _root(tmp_path)
    proc = _report(root, "--campaign", "rep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = root / "reports" / "rep" / "report.html"
    assert f"report: {page}" in " ".join(proc.stdout.split())
    text = page.read_text()
    # three figures per material (spectrum, VDOS, MSD), all embedded: no file links to break
    assert text.count("data:image/png;base64,") == 3 * len(SYNTHETIC)
    assert not re.search(r'<img src="(?!data:)', text)
    for name in SYNTHETIC:
        assert f"{name}: Raman spectrum (Fig. 3 equivalent)" in text
    # provenance and the α model's metrics per material
    assert "code version" in text and "chgnet" in text and "R² diagonal 0.95" in text
    # limits from what the runs recorded: 10 ps < 100 ps, N_T 140 < 300, CHGNet not fitted to DFT
    assert text.count("shorter than the paper") == len(SYNTHETIC)
    assert "N_T = 140" in text and "universal pretrained MLFF" in text
    for fig, _why in NOT_RECORDED:
        assert fig in text
    # the synthetic runs carry no parity rows: Figs. 2B/2C and S1 are listed, not drawn
    missing = text.split("<h2>Not in this report</h2>", 1)[1]
    for fig, _why in PARITY_FIGURES.values():
        assert f"{fig}: needs" in missing and "not recorded by AgI" in missing


def test_known_limits_name_the_embedded_reference_and_a_distilled_potential() -> None:
    lim = known_limits({"reference_method": "thole-dipole-model (embedded, not DFPT)", "mlff": "snap distilled from chgnet",
                        "md_production_ps": 120.0, "n_train": 300})
    from ramanscreen.tasks.reference.compare import dipole_gap_line

    gap = dipole_gap_line()  # the dipole model's measured gap to CP2K (tasks/data/dipole_vs_dft)
    assert gap is not None and "α RMSE" in gap
    assert lim == ["α reference: thole-dipole-model (embedded, not DFPT) — an embedded model, not DFPT", gap,
                   "MD forces: snap distilled from chgnet — a distilled potential, not DFT"]


def test_report_without_results_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _report(tmp_path / "nowhere")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--results-root" in lines[0] and "fix:" in lines[0], proc.stderr


@pytest.mark.system("chromium")
def test_report_renders_in_chromium_with_every_image(tmp_path: Path) -> None:
    from browser import Browser
    from PIL import Image

    root = _root(tmp_path)
    assert _report(root, "--campaign", "rep").returncode == 0
    page = root / "reports" / "rep" / "report.html"
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.goto(page.as_uri())
        browser.wait_text("Known limits")
        n, broken = 0, -1
        for _ in range(60):  # wait until every image has decoded
            n, broken, pending = browser.js(
                "(() => { const im = [...document.images]; return [im.length,"
                " im.filter(i => i.complete && i.naturalWidth === 0).length,"
                " im.filter(i => !i.complete).length]; })()")
            if pending == 0:
                break
        assert n == 3 * len(SYNTHETIC) and broken == 0, (n, broken)
        boxes = browser.js("[...document.images].map(i => { const r = i.getBoundingClientRect();"
                           " return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })")
        shot = browser.screenshot(tmp_path / "report.png", full_page=True)
    finally:
        browser.close()
    # the full-page screenshot shows every figure: each image's region holds drawn lines and text
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=float)
    assert img.shape[0] > 1000
    for x, y, w, h in boxes:
        region = img[int(y):int(y + h), int(x):int(x + w)]
        assert w > 100 and h > 100 and region.size and (region < 128).mean() > 0.005, (x, y, w, h)
    print(f"screenshot: {shot}")
