"""Shared plumbing for every stage: input errors, units and atomic writes.

Nothing here imports Prefect or Dask.

>>> from ramanscreen.tasks.common import CM1_PER_INV_FS, InputError
>>> round(CM1_PER_INV_FS, 2)  # 1 fs^-1 expressed in cm^-1
33356.41
>>> str(InputError("must be positive", file="run.toml", field="dt_fs", fix="use e.g. 2.0"))
'run.toml: dt_fs: must be positive (fix: use e.g. 2.0)'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Speed of light in cm/s (exact, SI definition).
C_CM_PER_S = 2.99792458e10
#: A frequency of 1 fs^-1 (cycles per fs) in wavenumbers, cm^-1.
CM1_PER_INV_FS = 1e15 / C_CM_PER_S
#: 1 Å^2/fs in cm^2/s.
CM2_PER_S_PER_A2_PER_FS = 1e-16 / 1e-15


class InputError(ValueError):
    """Bad user input, reported as one line naming the file, the field and the fix.

    The CLI turns it into ``error: <file>: <field>: <message> (fix: <fix>)`` and exit code 2.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.field = field
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        text = ": ".join([*parts, self.message])
        if self.fix:
            text += f" (fix: {self.fix})"
        return " ".join(text.split())  # always one line


def _umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (mkstemp uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it over ``path`` only on success.

    A crash or an exception leaves either the old file or no file, never a partial one.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(p, "w") as fh:
    ...     _ = fh.write("hello")
    >>> p.read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, _umask_mode())
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for writers that want a file name
    (matplotlib, pyarrow, ASE); rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable_dir(path: str | os.PathLike[str], *, file: str | os.PathLike[str] | None = None,
                       field: str | None = None, what: str = "output directory") -> Path:
    """Make ``path`` (and its parents) and prove it writable with a probe file, or raise a
    one-line :class:`InputError` naming ``file`` and ``field`` (not a bare PermissionError).

    >>> check_writable_dir("/proc/no/such/root", file="c.toml", field="results_root", what="results root")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: c.toml: results_root: cannot write the results root /proc/no/such/root: ... (fix: ...)
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot write the {what} {path}: {reason}", file=file, field=field,
                         fix=f"choose a writable {what} (or fix its permissions: it needs write access)") from None
    return path


class Staging:
    """The outputs of one command, written into a private staging folder (see :func:`staged`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.outputs: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike[str]) -> Path:
        """Where to write the output that will be published as ``final``."""
        final = Path(final)
        tmp = self.folder / f"{len(self.outputs)}-{final.name}"
        self.outputs.append((tmp, final))
        return tmp

    def group(self, finals: Sequence[str | os.PathLike[str]]) -> Path:
        """A folder in which to write files that must keep their final names (one writer that
        makes several files referring to each other by name, e.g. a model and its sidecar);
        each ``final`` is published from ``<folder>/<its name>``."""
        sub = self.folder / f"group-{len(self.outputs)}"
        sub.mkdir()
        for final in map(Path, finals):
            self.outputs.append((sub / final.name, final))
        return sub


def _refuse_blocked(final: Path, field: str | None) -> None:
    if final.is_dir():
        raise InputError(f"{final} is a directory, so the output cannot be written there", file=final,
                         field=field, fix="remove or rename it, or write the outputs to another directory")
    parent = final.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{parent} is a file, so the output folder cannot be made", file=final, field=field,
                         fix="choose an output directory whose parents are directories")


@contextlib.contextmanager
def staged(out_dir: str | os.PathLike[str], *, field: str | None = "out_dir") -> Iterator[Staging]:
    """Write a command's outputs into a staging folder inside ``out_dir``; publish them all with
    atomic renames at the end, or none of them.

    Every target is checked before anything is published (a directory in the way, a parent that
    is a file); a rename that still fails puts back what was there before. On an exception the
    staging folder goes, so a failed command leaves the output location as it found it.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "b.json").mkdir()  # something in the way of the second output
    >>> with staged(d) as st:
    ...     _ = st.path(d / "a.txt").write_text("a")
    ...     _ = st.path(d / "b.json").write_text("b")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: /.../b.json: out_dir: /.../b.json is a directory, so the output cannot be written there (fix: ...)
    >>> sorted(p.name for p in d.iterdir())
    ['b.json']
    """
    import shutil

    out = Path(out_dir)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{probe} is a file, not a directory", file=out, field=field,
                         fix="choose an output directory whose parents are directories")
    try:
        out.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    except OSError as exc:
        raise InputError(f"cannot write here: {exc.strerror or exc}", file=out, field=field,
                         fix="choose a writable directory or fix its permissions") from None
    stage = Staging(folder)
    try:
        yield stage
        for _, final in stage.outputs:
            _refuse_blocked(final, field)
        done: list[tuple[Path, Path | None]] = []
        try:
            for i, (tmp, final) in enumerate(stage.outputs):
                final.parent.mkdir(parents=True, exist_ok=True)
                backup = None
                if final.exists():
                    backup = folder / f".old-{i}"
                    os.replace(final, backup)
                done.append((final, backup))
                if tmp.exists():
                    os.chmod(tmp, _umask_mode())
                    os.replace(tmp, final)
        except BaseException:
            for final, backup in reversed(done):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, final)
                    elif final.exists() and not final.is_dir():
                        final.unlink()
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_table(
    columns: Mapping[str, Any], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write named 1-D columns as Parquet (``.parquet``) or CSV (``.csv``), atomically.

    ``metadata`` goes into the Parquet schema metadata (ignored for CSV).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.table({k: np.asarray(v) if not isinstance(v, (list, pa.Array)) else v for k, v in columns.items()})
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k: str(v) for k, v in metadata.items()}})
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            pq.write_table(table, tmp)
        elif path.suffix == ".csv":
            pacsv.write_csv(table, tmp)
        else:
            raise InputError(
                f"unknown table format {path.suffix!r}", file=path, field="suffix", fix="use .parquet or .csv"
            )
    return path


#: Magic numbers of binary formats a user may hand to a text reader by mistake.
_MAGIC = ((b"\x93NUMPY", "a NumPy .npy array", "npy"), (b"PK\x03\x04", "a zip archive (.npz?)", "npz"),
          (b"PAR1", "a Parquet table", None), (b"\x89HDF", "an HDF5 file", None),
          (b"SQLite format 3", "an SQLite database", None), (b"\x7fELF", "an executable", None),
          (b"\x1f\x8b", "a gzip archive", None), (b"\x89PNG", "a PNG image", None),
          (b"%PDF", "a PDF document", None))


def refuse_binary(path: str | os.PathLike[str], *, what: str, field: str | None = None,
                  fix: str | None = None) -> None:
    """Raise :class:`InputError` if ``path`` is not text (a NUL byte, or not UTF-8, in its first
    8 KiB), naming the format when its magic number tells (``.npy``, zip, Parquet, ...).

    A text reader handed a binary file otherwise reports something confusing ("has 4 columns
    instead of 6"); this says what the file is and what was expected.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with open(p, "wb") as fh:
    ...     np.save(fh, np.zeros(3))
    >>> refuse_binary(p, what="a 6-column α text file", field="input_format")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: /.../a.txt: input_format: is a binary file (a NumPy .npy array), not a 6-column α text file (fix: rename it to .npy, or name its format (npy))
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return  # the reader reports a missing or unreadable file in its own words
    if not head:
        return
    kind = next(((name, fmt) for magic, name, fmt in _MAGIC if head.startswith(magic)), None)
    binary = kind is not None or b"\x00" in head
    if not binary:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            binary = exc.start < len(head) - 4  # a multi-byte character cut at 8 KiB is still text
    if not binary:
        return
    name, fmt = kind if kind is not None else ("not text", None)
    if fix is None:
        fix = f"rename it to .{fmt}, or name its format ({fmt})" if fmt else f"pass {what}"
    raise InputError(f"is a binary file ({name}), not {what}", file=path, field=field, fix=fix)


def require_finite(array: np.ndarray, *, file: str | os.PathLike[str] | None, field: str) -> None:
    """Raise :class:`InputError` naming the first frame that holds NaN or inf."""
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise InputError(
            f"non-finite value (NaN or inf) at frame {first}", file=file, field=field, fix="remove or repair that frame"
        )


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` with its own Agg canvas: no pyplot state, no display, and the
    caller's backend (a notebook's, say) untouched. ``kwargs`` go to ``Figure``.

    >>> fig = new_figure(figsize=(3, 2))
    >>> ax = fig.subplots()
    >>> type(fig.canvas).__name__
    'FigureCanvasAgg'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: float | None = None) -> Path:
    """Save a matplotlib figure atomically (format from the suffix, PNG by default).

    A pyplot-managed figure is closed afterwards; pyplot is never imported here, so saving
    does not select or switch a backend.
    """
    import sys

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is not None and getattr(fig.canvas, "manager", None) is not None:
            plt.close(fig)
    return path
