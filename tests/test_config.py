"""Campaign files: every shipped file validates, and every kind of mistake is one line naming
the file and the field (fast; no Prefect server, no MD)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ramanscreen.flows.config import SECTIONS, deep_merge, load_campaign, n_alpha_frames, parse_campaign
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.md import MDSettings

REPO = Path(__file__).resolve().parents[1]
CAMPAIGNS = REPO / "deployments" / "campaigns"
SHIPPED = sorted(p.stem for p in CAMPAIGNS.glob("*.toml"))

GOOD = """
name = "t"
results_root = "out"
[mlff]
calculator = "chgnet"
[md]
dt_fs = 2.0
steps = 200
alpha_stride = 2
[reference]
n_train = 8
n_test = 2
[spectrum]
omega_min_cm1 = 200.0
omega_c_cm1 = 500.0
host_window_cm1 = [500.0, 1500.0]
[[materials]]
name = "A"
structure = "Na3PS4"
n_atoms = 16
temperature_k = 900
mobile = ["Na"]
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["default", "paper", "quick", "hpc-example"])
def test_shipped_campaigns_validate(name: str) -> None:
    c = load_campaign(CAMPAIGNS / f"{name}.toml")
    assert c.name == name
    assert {m.name for m in c.materials} == {"AgI", "Na3SbS4", "Na3SbS4-W", "Na3PS4"}
    temps = {m.name: m.temperature_k for m in c.materials}
    assert temps == {"AgI": 500.0, "Na3SbS4": 300.0, "Na3SbS4-W": 300.0, "Na3PS4": 900.0}
    assert c.mlff.calculator == "chgnet"
    assert c.reference.backend == ("cp2k" if name == "hpc-example" else "dipole")
    assert {m.mobile[0] for m in c.materials} == {"Ag", "Na"}


def test_sections_are_the_stage_settings() -> None:
    """Each TOML section is its stage's dataclass: the section's defaults are the dataclass's."""
    from ramanscreen.analytics.ranking import Thresholds
    from ramanscreen.tasks.md import MDSettings
    from ramanscreen.tasks.spectra import SpectrumSettings, central_peak_descriptors, raman_spectrum
    from ramanscreen.tasks.transport import TransportSettings, analyze_transport

    c = parse_campaign({"name": "x", "materials": [{"name": "A", "structure": "AgI", "temperature_k": 500,
                                                     "mobile": ["Ag"], "steps": 20000, "dt_fs": 10.0}]})
    for section, cls in SECTIONS.items():
        assert getattr(c, section) == cls(), section
    md = c.materials[0].md
    assert md.num_threads == MDSettings.num_threads and md.checkpoint_every == MDSettings.checkpoint_every
    # the science functions' defaults are the same fields
    import inspect

    for fn, cls in ((raman_spectrum, SpectrumSettings), (central_peak_descriptors, SpectrumSettings),
                    (analyze_transport, TransportSettings)):
        for name, param in inspect.signature(fn).parameters.items():
            if param.default is not inspect.Parameter.empty and name in {f for f in cls.__dataclass_fields__}:
                assert param.default == getattr(cls(), name), (fn.__name__, name)
    assert Thresholds().d_liquid_cm2_s == c.ranking.d_liquid_cm2_s


def test_paper_campaign_holds_the_paper_settings() -> None:
    c = load_campaign(CAMPAIGNS / "paper.toml")
    m = {x.name: x for x in c.materials}
    assert [m[k].n_atoms for k in ("AgI", "Na3SbS4", "Na3SbS4-W", "Na3PS4")] == [128, 128, 127, 256]
    assert m["AgI"].md.dt_fs == 10.0 and m["AgI"].md.steps * 10.0 / 1000 == 120.0
    for k in ("Na3SbS4", "Na3SbS4-W", "Na3PS4"):
        assert m[k].md.dt_fs == 2.0 and m[k].md.steps * 2.0 / 1000 == 100.0
    assert c.reference.n_train == 300
    # α every 10th MD step (the Na runs store every 5th step and take α on every 2nd stored frame)
    assert all(x.md.alpha_stride * x.md.write_every == 10 for x in c.materials)
    # γ-Na3PS4 NVT at the built γ density: the teacher's own NPT expands it (docs/md.md)
    assert c.mlff.distil and not m["Na3PS4"].md.npt_first and m["Na3PS4"].md.npt_equilibration == "off"
    assert MDSettings(temperature_k=900.0).npt_first  # high-T phases still equilibrate in NPT by default


def test_quick_profile_is_a_deep_merge(tmp_path: Path) -> None:
    full = load_campaign(CAMPAIGNS / "default.toml")
    quick = load_campaign(CAMPAIGNS / "default.toml", quick=True)
    assert quick.name == "default-quick" and quick.quick
    q = {m.name: m for m in quick.materials}
    f = {m.name: m for m in full.materials}
    assert q["AgI"].n_atoms == 32 and q["AgI"].md.dt_fs == 10.0 and q["AgI"].md.steps == 60
    assert q["Na3PS4"].md.steps == 200 and f["Na3PS4"].md.steps == 20000
    # production at >= 40 ps (Na) and >= 60 ps (AgI) on the distilled potentials
    assert f["AgI"].md.steps * f["AgI"].md.dt_fs >= 60_000 and f["Na3SbS4"].md.steps * 2.0 >= 40_000
    assert full.mlff.distil and quick.mlff.distil and quick.mlff.teacher_steps == 100
    assert quick.reference.backend == "dipole" and quick.reference.n_train == 8
    # the quick profile ranks by the same metric as the full campaign, on its own windows
    assert quick.ranking.metric == full.ranking.metric == "cp_fraction"
    assert (quick.spectrum.omega_min_cm1, full.spectrum.omega_min_cm1) == (200.0, 20.0)
    assert quick.cluster == full.cluster
    # the quick profile gives different run ids, so its results never overwrite the full ones
    assert q["AgI"].fingerprint(quick) != f["AgI"].fingerprint(full)
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_defaults_and_temperature_list(tmp_path: Path) -> None:
    text = GOOD.replace("temperature_k = 900", "temperatures_k = [600, 900]")
    c = load_campaign(write(tmp_path, text))
    assert [m.name for m in c.materials] == ["A-600K", "A-900K"]
    assert c.results_root == (Path.cwd() / "out").resolve()
    assert c.model.committee == 8 and c.transport.method == "kinisi"
    assert n_alpha_frames(c.materials[0].md) == 101
    # the run id changes with any setting that changes the results, and only then
    a = c.materials[0].fingerprint(c)
    c2 = load_campaign(write(tmp_path, text.replace("n_train = 8", "n_train = 9"), "d.toml"))
    assert c2.materials[0].fingerprint(c2) != a
    c3 = load_campaign(write(tmp_path, text.replace('name = "t"', 'name = "u"'), "e.toml"))
    assert c3.materials[0].fingerprint(c3) == a


def test_structure_file_relative_to_campaign(tmp_path: Path) -> None:
    from ramanscreen.tasks.structures import build_structure, write_structure

    write_structure(build_structure("Na3PS4", n_atoms=16), tmp_path / "cells" / "nps.cif")
    c = load_campaign(write(tmp_path, GOOD.replace('structure = "Na3PS4"', 'structure = "cells/nps.cif"')))
    assert c.materials[0].structure == str((tmp_path / "cells" / "nps.cif").resolve())


BAD = [
    # (replace this, with that, field named in the error)
    ('name = "t"', 'name = "t"\ncolour = "red"', "colour"),
    ('name = "t"', 'name = "a b"', "name"),
    ('calculator = "chgnet"', 'calculator = "chgnet"\ndevice = "cpu"', "mlff.device"),
    ('calculator = "chgnet"', 'calculator = ""', "mlff.calculator"),
    ("dt_fs = 2.0", "dt_fs = -2.0", "md.dt_fs"),
    ("dt_fs = 2.0", 'dt_fs = "2"', "md.dt_fs"),
    ("dt_fs = 2.0", "dt_fs = 2.0\nensemble = \"nve\"", "md.ensemble"),
    ("steps = 200", "steps = 200\nthermostat = 1", "md.thermostat"),
    ("n_train = 8", "n_train = 1", "reference.n_train"),
    ("n_train = 8", "n_train = -3", "reference.n_train"),
    ("n_train = 8", "n_train = 500", "materials[0].steps"),
    ("n_train = 8", "n_train = 8\nbackend = 3", "reference.backend"),
    ("n_train = 8", 'n_train = 8\nbackend = "gaussian"', "reference.backend"),
    ("n_train = 8", 'n_train = 8\nselection = "best"', "reference.selection"),
    ("n_train = 8", "n_train = 8\noptions = { cutof_ry = 300 }", "reference.options.cutof_ry"),
    ("n_test = 2", "n_test = -1", "reference.n_test"),
    # windows without enough bins, or beyond the Nyquist frequency of the α sampling
    ("omega_min_cm1 = 200.0", "omega_min_cm1 = 5.0", "materials[0].steps"),
    ("omega_c_cm1 = 500.0", "omega_c_cm1 = 230.0", "materials[0].steps"),
    ("alpha_stride = 2", "alpha_stride = 40", "materials[0].alpha_stride"),
    ("host_window_cm1 = [500.0, 1500.0]", "host_window_cm1 = [1500.0, 500.0]", "spectrum.host_window_cm1"),
    ("host_window_cm1 = [500.0, 1500.0]", "host_window_cm1 = [400.0, 1500.0]", "spectrum.host_window_cm1"),
    ("host_window_cm1 = [500.0, 1500.0]", "host_window_cm1 = [500.0]", "spectrum.host_window_cm1"),
    ("omega_c_cm1 = 500.0", "omega_c_cm1 = 150.0", "spectrum.omega_c_cm1"),
    # percentiles out of [0, 100] (the operator-precedence bug accepted [16, 150]) or decreasing
    ("[spectrum]", "[spectrum]\nband_percentiles = [16, 150]", "spectrum.band_percentiles"),
    ("[spectrum]", "[spectrum]\nband_percentiles = [-5, 84]", "spectrum.band_percentiles"),
    ("[spectrum]", "[spectrum]\nband_percentiles = [84, 16]", "spectrum.band_percentiles"),
    ("[spectrum]", "[spectrum]\nsigma_cm1 = -1", "spectrum.sigma_cm1"),
    ("[spectrum]", "[spectrum]\nsmoothing = 4", "spectrum.smoothing"),
    ("temperature_k = 900", "temperature_k = -5", "materials[0].temperature_k"),
    ("temperature_k = 900", "temperatures_k = [600, -5]", "materials[0].temperatures_k[1]"),
    ("temperature_k = 900", "temperature_k = 900\ntemperatures_k = [300]", "materials[0].temperature_k"),
    ("temperature_k = 900", "", "materials[0].temperature_k"),
    ('mobile = ["Na"]', 'mobile = "Na"', "materials[0].mobile"),
    ('mobile = ["Na"]', "", "materials[0].mobile"),
    ("n_atoms = 16", "n_atoms = 16\nspin = 1", "materials[0].spin"),
    ("n_atoms = 16", "n_atoms = 0", "materials[0].n_atoms"),
    ("n_atoms = 16", "n_atoms = 16\nwrite_every = 0", "materials[0].write_every"),
    ('structure = "Na3PS4"', 'structure = "unobtainium.cif"', "materials[0].structure"),
    # a doped garnet's fraction and cell size are checked when the file is read, before any MD
    ('structure = "Na3PS4"\nn_atoms = 16', 'structure = "LLZO-Ta:x=0.3"\nn_atoms = 192', "materials[0].structure"),
    ('structure = "Na3PS4"', 'structure = "LLZO-Al:x=0.9"', "materials[0].structure"),
    ('structure = "Na3PS4"', 'structure = "LLZO-Ga:y=zero"', "materials[0].structure"),
    ('structure = "Na3PS4"', 'structure = "LLZO-Ga:x=0.25"', "materials[0].n_atoms"),
    ("[[materials]]", '[cluster]\nkind = "cloud"\n[[materials]]', "cluster.kind"),
    ("[[materials]]", "[model]\nhypers = { cutof_A = 4.0 }\n[[materials]]", "model.hypers.cutof_A"),
    ("[[materials]]", "[model]\nhypers = { cutoff_A = -4.0 }\n[[materials]]", "model.hypers.cutoff_A"),
    ("[[materials]]", "[model]\ncommittee = -2\n[[materials]]", "model.committee"),
    ("[[materials]]", "[prediction]\nchunk_frames = 0\n[[materials]]", "prediction.chunk_frames"),
    ("[[materials]]", '[transport]\nmethod = "magic"\n[[materials]]', "transport.method"),
    ("[[materials]]", "[transport]\nfit_start_ps = 50.0\n[[materials]]", "transport.fit_start_ps"),
    ("[[materials]]", '[ranking]\nmetric = "cp fraction"\n[[materials]]', "ranking.metric"),
    ("[[materials]]", "[ranking]\nd_hopping_cm2_s = 1e-5\n[[materials]]", "ranking.d_hopping_cm2_s"),
    ("[[materials]]", "[ranking]\nd_liquid_cm2_s = -1.0\n[[materials]]", "ranking.d_liquid_cm2_s"),
]


@pytest.mark.parametrize(("old", "new", "field"), BAD, ids=[b[2] + ":" + b[1][:18] for b in BAD])
def test_malformed_campaign_names_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(InputError) as exc:
        load_campaign(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {field}: "), msg


def test_duplicate_materials_and_empty_list(tmp_path: Path) -> None:
    dup = GOOD + GOOD[GOOD.index("[[materials]]"):]
    with pytest.raises(InputError, match=r"materials\[1\]\.name: duplicate"):
        load_campaign(write(tmp_path, dup))
    with pytest.raises(InputError, match=r": materials: no materials"):
        parse_campaign({"name": "x"}, file="x.toml")


def test_quick_flag_without_profile_and_unknown_quick_material(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c.toml: quick: this campaign has no \[quick\]"):
        load_campaign(write(tmp_path, GOOD), quick=True)
    bad = GOOD + "\n[quick.materials.B]\nn_atoms = 16\n"
    with pytest.raises(InputError, match=r"quick.materials.B: no material of that name"):
        load_campaign(write(tmp_path, bad), quick=True)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid TOML"):
        load_campaign(write(tmp_path, "name = \n"))
    with pytest.raises(InputError, match="no such campaign file"):
        load_campaign(tmp_path / "nope.toml")


def test_llzo_campaign_screens_pristine_and_doped_garnets_at_t_and_p() -> None:
    """deployments/campaigns/llzo.toml (issue 14): pristine, Ta-, Al- and Ga-doped LLZO on one
    garnet cell each, at 573 K and 0.5 GPa (the pristine cell also at 10 MPa), NPT first so the
    results record the pressure; the [quick] profile keeps the materials and shortens the MD."""
    from ramanscreen.tasks.structures import load_structure

    full, quick = (load_campaign(CAMPAIGNS / "llzo.toml", quick=q) for q in (False, True))
    want = {"LLZO": ("LLZO", 192, 0.5), "LLZO-10MPa": ("LLZO", 192, 0.01), "LLZO-Ta": ("LLZO-Ta:x=0.5", 188, 0.5),
            "LLZO-Al": ("LLZO-Al:x=0.25", 188, 0.5), "LLZO-Ga": ("LLZO-Ga:x=0.25", 188, 0.5)}
    for c in (full, quick):
        assert {m.name: (m.structure, m.n_atoms, m.md.pressure_gpa) for m in c.materials} == want
        assert all(m.temperature_k == 573.0 and m.mobile == ("Li",) and m.md.controls_pressure for m in c.materials)
    assert quick.name == "llzo-quick" and all(m.md.steps < f.md.steps for m, f in zip(quick.materials, full.materials, strict=True))
    # what the structure stage builds from each entry: the named composition, charge balanced
    formulas = {m.name: load_structure(m.structure, n_atoms=m.n_atoms).info.get("formula") for m in full.materials
                if m.name != "LLZO-10MPa"}
    assert formulas == {"LLZO": None, "LLZO-Ta": "Li6.5La3Zr1.5Ta0.5O12", "LLZO-Al": "Li6.25Al0.25La3Zr2O12",
                        "LLZO-Ga": "Li6.25Ga0.25La3Zr2O12"}


def _validate(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", "validate", str(path)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("name", SHIPPED)
def test_validate_accepts_every_shipped_campaign_and_its_quick_profile(name: str, tmp_path: Path) -> None:
    proc = _validate(CAMPAIGNS / f"{name}.toml", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    text = (CAMPAIGNS / f"{name}.toml").read_text()
    has_quick, has_explore = "[quick]" in text, "[explore]" in text
    # one line per campaign profile, and per exploration profile when the file has [explore]
    assert len(lines) == (1 + has_quick) * (1 + has_explore) and all(line.startswith("ok: ") for line in lines), proc.stdout
    assert ("[quick profile]" in proc.stdout) == has_quick
    assert ("exploration '" in proc.stdout) == has_explore
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


VALIDATE_BAD = [  # (what is wrong, the replacement in GOOD, the TOML key the one-line error must name)
    ("percentile above 100", ("[spectrum]", "[spectrum]\nband_percentiles = [16, 150]"), "spectrum.band_percentiles"),
    ("negative percentile", ("[spectrum]", "[spectrum]\nband_percentiles = [-1, 84]"), "spectrum.band_percentiles"),
    ("negative n_train", ("n_train = 8", "n_train = -8"), "reference.n_train"),
    ("unknown key", ("[spectrum]", "[spectrum]\nomega_max_cm1 = 3000.0"), "spectrum.omega_max_cm1"),
    ("unknown top-level key", ('name = "t"', 'name = "t"\nresult_root = "x"'), "result_root"),
    ("window without enough bins", ("omega_min_cm1 = 200.0", "omega_min_cm1 = 20.0"), "materials[0].steps"),
    ("low window of under 3 bins", ("omega_c_cm1 = 500.0", "omega_c_cm1 = 240.0"), "materials[0].steps"),
    ("quick profile broken", ("[[materials]]", "[quick.reference]\nn_train = 1\n[[materials]]"), "reference.n_train"),
]


@pytest.mark.parametrize(("case", "edit", "field"), VALIDATE_BAD, ids=[b[0] for b in VALIDATE_BAD])
def test_validate_rejects_with_one_line_and_exit_2(tmp_path: Path, case: str, edit: tuple[str, str],
                                                    field: str) -> None:
    assert edit[0] in GOOD
    path = write(tmp_path, GOOD.replace(*edit, 1))
    proc = _validate(path, tmp_path)
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}: {field}: "), lines[0]
    assert "(fix: " in lines[0] or case in ("unknown top-level key",) or "missing" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """`ramanscreen screen` rejects a bad file before starting a server or writing anything."""
    path = write(tmp_path, GOOD.replace("temperature_k = 900", "temperature_k = \"hot\""))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "screen", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "materials[0].temperature_k" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "out").exists()  # no partial results


def test_campaign_doc_lists_every_key_with_its_default() -> None:
    """docs/campaign.md's key reference is generated from the settings dataclasses: a changed
    default, bound or doc string shows up as a failing test until the page is regenerated."""
    from ramanscreen.flows.config import settings_reference_markdown

    page = (REPO / "docs" / "campaign.md").read_text()
    assert settings_reference_markdown() in page, "regenerate the key reference of docs/campaign.md"
