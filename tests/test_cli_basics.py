"""The CLI shell: help lists commands; errors are one line with a non-zero exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from ramanscreen.tasks.common import InputError, atomic_write


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def _listed_commands(help_text: str) -> list[str]:
    """The first word of every row of the --help "Commands" panel (whole names, not substrings)."""
    panel = help_text[help_text.index("Commands"):]
    return re.findall(r"(?m)^│ ([a-z][a-z0-9-]*)\s", panel)


def test_help_lists_every_command() -> None:
    from ramanscreen.flows import cli

    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    cli._load_commands()
    import typer

    names = sorted(typer.main.get_command(cli.app).commands)
    assert names, "no commands registered"
    listed = _listed_commands(out.stdout)
    assert sorted(listed) == names, (listed, names)  # every command once, as a whole name ("md" is not "import-md")
    assert {"md", "import-md", "validate", "screen"} <= set(listed)


def test_errors_name_the_flag_not_the_field(tmp_path) -> None:
    """The science layer names the field (dt_fs); the CLI maps it to the option of the command run."""
    import numpy as np

    from ramanscreen.tasks.spectra import write_alpha

    write_alpha(tmp_path / "a.txt", np.tile(np.eye(3), (32, 1, 1)), dt_fs=5.0)
    out = run_cli("spectrum", str(tmp_path / "a.txt"), "--dt-fs", "2", "--out", str(tmp_path / "s.csv"))
    assert out.returncode == 2
    assert out.stderr.strip().startswith(f"error: {tmp_path / 'a.txt'}: --dt-fs: 2 fs contradicts the file"), out.stderr
    usage = run_cli("spectrum")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr and "Traceback" not in usage.stderr


def test_input_error_is_one_line() -> None:
    e = InputError("bad\nthing", file="a.toml", field="x", fix="do y")
    assert "\n" not in str(e)
    assert str(e) == "a.toml: x: bad thing (fix: do y)"


def test_atomic_write_leaves_no_partial_file(tmp_path) -> None:
    target = tmp_path / "out.bin"
    try:
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("crash mid-write")
    except RuntimeError:
        pass
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_have_ordinary_permissions(tmp_path) -> None:
    import os

    from ramanscreen.tasks.common import atomic_path

    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as fh:
            fh.write("x")
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("y")
    finally:
        os.umask(mask)
    for name in ("a.txt", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_cli_doc_covers_every_command() -> None:
    """docs/cli.md, the written-down vocabulary, has a row for every command."""
    from pathlib import Path

    import typer

    from ramanscreen.flows import cli

    cli._load_commands()
    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    rows = re.findall(r"(?m)^\| `([a-z][a-z-]*(?: [a-z-]+)?)[ `]", page)
    group = typer.main.get_command(cli.app)
    names = set()
    for name, cmd in group.commands.items():
        sub = getattr(cmd, "commands", None)
        names |= {f"{name} {s}" for s in sub} if sub else {name}
    assert names <= set(rows), sorted(names - set(rows))
