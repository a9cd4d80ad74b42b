"""DuckDB over the Parquet results: the views, a sandboxed connection, and read-only queries.

The views are defined once, in ``analytics/views.sql`` (shipped as package data); the
duckdb CLI can ``.read`` the same file (see docs/results.md).

>>> import tempfile
>>> from ramanscreen.tasks.results import write_run
>>> root = tempfile.mkdtemp()
>>> _ = write_run(root, "demo", "AgI", "r1", meta=dict(formula="AgI", temperature_k=500, n_atoms=128,
...     mlff="chgnet", reference_method="embedded", n_train=140),
...     transport=[{"species": "Ag", "D_cm2_s": 2.8e-5}])
>>> con = connect(root)
>>> run_query(con, "SELECT material, species, D_cm2_s FROM transport").rows
[('AgI', 'Ag', 2.8e-05)]
>>> run_query(con, "DELETE FROM transport")
Traceback (most recent call last):
...
ramanscreen.tasks.common.InputError: query: only read queries (SELECT, EXPLAIN SELECT) run here, not DELETE (fix: results are read-only; change them by re-running the campaign)
"""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.results import COMMIT_FILE, OPTIONAL_TABLES, SCHEMA_VERSION, TABLES

#: Views the SQL file defines (tables first, then derived views).
VIEWS = (*TABLES, "mlff_flags", "central_peak", "mobile_transport", "screening")

_ALLOWED = {duckdb.StatementType.SELECT}


def views_sql() -> str:
    """The text of ``analytics/views.sql``."""
    return resources.files("ramanscreen.analytics").joinpath("views.sql").read_text(encoding="utf-8")


def views_sql_path() -> Path:
    """Where ``views.sql`` lives on disk (for ``duckdb -cmd ".read <path>"``)."""
    return Path(str(resources.files("ramanscreen.analytics").joinpath("views.sql")))


def check_results_root(results_root: str | os.PathLike[str]) -> Path:
    """Resolve ``results_root`` and check that it holds at least one committed run.

    Raises :class:`InputError` (one line, with a fix) for a missing path, a file, or a
    directory without committed ramanscreen runs.
    """
    root = Path(results_root).expanduser()
    if not root.exists():
        raise InputError("results root does not exist", file=root,
                         fix="pass the results root a campaign wrote (its `results_root` setting)")
    if not root.is_dir():
        raise InputError("results root is a file, not a directory", file=root,
                         fix="pass the directory that holds materials/, spectra/, ...")
    commits = list((root / "materials").glob(f"campaign=*/material=*/run_id=*/{COMMIT_FILE}"))
    if not commits:
        found = ", ".join(sorted(p.name for p in root.iterdir())[:5]) or "nothing"
        raise InputError(f"no committed ramanscreen runs under it (found: {found})", file=root,
                         fix="run a campaign into it first, or pass the right directory")
    missing = [t for t in TABLES if t not in OPTIONAL_TABLES and not (root / t).is_dir()]
    if missing:
        raise InputError(f"table directory {missing[0]}/ is missing", file=root,
                         fix="the results root is damaged; re-run the campaign into a fresh directory")
    return root.resolve()


def connect(results_root: str | os.PathLike[str], read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the results views over ``results_root``.

    With ``read_only=True`` (the default) the connection is sandboxed before it is returned:
    file access is limited to ``results_root`` (``allowed_directories`` with
    ``enable_external_access=false``), extension install/autoload is off, and the
    configuration is locked, so no ``SET`` can undo this. DuckDB's sandbox does not tell
    reads from writes inside the allowed directory, so *user* SQL must go through
    :func:`run_query`, which also admits only ``SELECT`` statements.

    Raises :class:`InputError` for a malformed results root, unreadable Parquet, or
    results written with a newer schema version than this code reads.
    """
    root = check_results_root(results_root)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET VARIABLE results_root = $1", [str(root)])
        con.execute(views_sql())
        newest = con.execute("SELECT max(schema_version) FROM materials").fetchall()[0][0]
    except duckdb.Error as exc:
        con.close()
        raise InputError(f"cannot read the results: {_one_line(exc)}", file=root,
                         fix="a Parquet file is damaged or foreign; re-run the material it belongs to") from None
    if newest is not None and newest > SCHEMA_VERSION:
        con.close()
        raise InputError(f"results use schema version {newest}; this ramanscreen reads up to {SCHEMA_VERSION}",
                         file=root, fix="upgrade ramanscreen")
    if read_only:
        allowed = str(root) + os.sep
        for stmt in (
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            f"SET allowed_directories = ['{_sql_str(allowed)}']",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ):
            con.execute(stmt)
    return con


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """Column names and rows of a query."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False


def check_read_only(sql: str) -> str:
    """Return ``sql`` if it is exactly one SELECT (or EXPLAIN of a SELECT); else raise.

    >>> check_read_only("SELECT 1")
    'SELECT 1'
    >>> check_read_only("COPY spectra TO 'x.csv'")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: query: only read queries (SELECT, EXPLAIN SELECT) run here, not COPY (fix: results are read-only; change them by re-running the campaign)
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError(f"cannot parse the SQL: {_one_line(exc)}", field="query", fix="check the SQL syntax") from None
    if len(statements) != 1:
        raise InputError(f"expected one statement, got {len(statements)}", field="query",
                         fix="run one SELECT at a time")
    stmt = statements[0]
    kind = stmt.type
    if kind == duckdb.StatementType.EXPLAIN:
        inner = stmt.query.strip().rstrip(";").split(None, 1)
        rest = inner[1] if len(inner) > 1 else ""
        if rest.upper().startswith("ANALYZE"):
            rest = rest[len("ANALYZE"):]
        try:
            inner_stmts = duckdb.extract_statements(rest)
        except duckdb.Error:
            inner_stmts = []
        if len(inner_stmts) == 1 and inner_stmts[0].type in _ALLOWED:
            return sql
        kind_name = "EXPLAIN of a non-SELECT"
    elif kind in _ALLOWED:
        return sql
    else:
        kind_name = kind.name
    raise InputError(f"only read queries (SELECT, EXPLAIN SELECT) run here, not {kind_name}", field="query",
                     fix="results are read-only; change them by re-running the campaign")


def run_query(con: duckdb.DuckDBPyConnection, sql: str, limit: int | None = None) -> QueryResult:
    """Run one read-only statement (see :func:`check_read_only`) and return its rows.

    ``limit`` caps the rows fetched (``truncated`` tells whether more existed). DuckDB errors
    (unknown column, file access outside the results root, ...) become :class:`InputError`.
    """
    check_read_only(sql)
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in (cur.description or [])]
        if limit is None:
            rows = cur.fetchall()
            truncated = False
        else:
            rows = cur.fetchmany(limit + 1)
            truncated = len(rows) > limit
            rows = rows[:limit]
    except duckdb.Error as exc:
        raise InputError(_one_line(exc), field="query", fix="check table and column names with "
                         "`SELECT * FROM information_schema.columns`") from None
    return QueryResult(columns, [tuple(r) for r in rows], truncated)
