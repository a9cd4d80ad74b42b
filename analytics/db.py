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
import json
import os
import shutil
import tempfile
import threading
import weakref
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.results import COMMIT_FILE, DATA_TABLES, OPTIONAL_TABLES, SCHEMA_VERSION, TABLES

#: Views the SQL file defines (tables first, then derived views).
VIEWS = (*TABLES, "block_errors", "mlff_flags", "central_peak", "mobile_transport", "screening", "experimental_spectra",
         "experimental_conductivity")

_ALLOWED = {duckdb.StatementType.SELECT}

#: Table functions a query may call: generators and the catalogue, none of which opens a file.
#: Everything else (``read_text``, ``read_blob``, ``glob``, ``read_parquet``, ``read_csv``, ...)
#: is refused before it runs; the views are the way to the data.
SAFE_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "duckdb_columns", "duckdb_tables", "duckdb_views",
    "duckdb_types", "duckdb_functions", "duckdb_constraints", "duckdb_schemas", "pragma_table_info",
})


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


def connect(results_root: str | os.PathLike[str], read_only: bool = True, *,
            temp_dir: str | os.PathLike[str] | None = None,
            memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the results views over ``results_root``.

    With ``read_only=True`` (the default) the connection is confined before it is returned
    (:func:`_confine`): the only files it can open are the committed data files the views
    read (``allowed_paths``, no ``allowed_directories``, ``enable_external_access=false``), so
    ``read_text``/``glob``/``read_csv`` see neither the rest of the root (``_prefect/``, logs)
    nor anything outside it; DuckDB's temp directory is ``temp_dir`` (default: a private
    folder made for this connection and removed with it), never ``<cwd>/.tmp``; memory is
    capped at ``memory_limit`` (default: ``Settings.query_memory_limit``); extension
    install/autoload is off and the configuration is locked, so no ``SET`` can undo this.
    *User* SQL must still go through :func:`run_query`, which admits one ``SELECT`` over the
    views, refuses table functions over files, and interrupts it after a time limit.

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
        try:
            _confine(con, root, temp_dir=temp_dir, memory_limit=memory_limit)
        except BaseException:
            con.close()
            raise
    return con


def _committed_files(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every data file the views read (the ``<table>_files`` variables of views.sql)."""
    files: list[str] = []
    for table in DATA_TABLES:
        value = con.execute("SELECT getvariable($1)", [f"{table}_files"]).fetchall()[0][0]
        files.extend(value or [])
    return files


def _confine(con: duckdb.DuckDBPyConnection, root: Path, *, temp_dir: str | os.PathLike[str] | None,
             memory_limit: str | None) -> None:
    """Lock ``con`` down to the committed data files under ``root`` (see :func:`connect`)."""
    from ramanscreen.tasks.settings import get_settings

    if temp_dir is None:
        private = tempfile.mkdtemp(prefix="ramanscreen-query-")
        weakref.finalize(con, shutil.rmtree, private, True)
        temp_dir = private
    temp = Path(temp_dir).resolve()
    limit = memory_limit or get_settings().query_memory_limit
    paths = ", ".join(f"'{_sql_str(p)}'" for p in _committed_files(con)) or f"'{_sql_str(str(root / 'materials'))}'"
    for stmt in (
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        f"SET temp_directory = '{_sql_str(str(temp))}'",
        f"SET memory_limit = '{_sql_str(limit)}'",
        "SET allowed_directories = []",
        f"SET allowed_paths = [{paths}]",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        try:
            con.execute(stmt)
        except duckdb.Error as exc:
            raise InputError(f"cannot confine the query connection: {_one_line(exc)}",
                             field="query_memory_limit" if "memory_limit" in stmt else None,
                             fix="give a DuckDB size such as '2GB'") from None


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
            _check_sources(rest)
            return sql
        kind_name = "EXPLAIN of a non-SELECT"
    elif kind in _ALLOWED:
        _check_sources(sql)
        return sql
    else:
        kind_name = kind.name
    raise InputError(f"only read queries (SELECT, EXPLAIN SELECT) run here, not {kind_name}", field="query",
                     fix="results are read-only; change them by re-running the campaign")


def _sources(node: Any, functions: set[str], tables: set[str]) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            functions.add(str((node.get("function") or {}).get("function_name", "")).lower())
        elif kind == "BASE_TABLE":
            tables.add(str(node.get("table_name", "")))
        for value in node.values():
            _sources(value, functions, tables)
    elif isinstance(node, list):
        for value in node:
            _sources(value, functions, tables)


def _check_sources(sql: str) -> None:
    """Refuse table functions that open files (``read_text``, ``glob``, ...) and file names used as
    tables (``FROM 'x.parquet'``): a query reads the views, nothing else.

    >>> _check_sources("SELECT * FROM glob('results/_prefect/*')")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: query: table function glob() is not available here: queries read the views only (fix: select from the views: materials, spectra, ...)
    """
    con = duckdb.connect(":memory:")
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql($1)", [sql]).fetchall()[0][0])
    finally:
        con.close()
    if tree.get("error"):
        return  # not a plain SELECT tree (e.g. PIVOT): the locked file sandbox still applies
    functions: set[str] = set()
    tables: set[str] = set()
    _sources(tree.get("statements", []), functions, tables)
    fix = f"select from the views: {', '.join(VIEWS)}"
    bad = sorted(functions - SAFE_TABLE_FUNCTIONS)
    if bad:
        raise InputError(f"table function {bad[0]}() is not available here: queries read the views only",
                         field="query", fix=fix)
    files = sorted(t for t in tables if any(c in t for c in "/\\.*"))
    if files:
        raise InputError(f"reading the file {files[0]!r} directly is not available here: queries read the views only",
                         field="query", fix=fix)


def run_query(con: duckdb.DuckDBPyConnection, sql: str, limit: int | None = None, *,
              timeout_s: float | None = None) -> QueryResult:
    """Run one read-only statement (see :func:`check_read_only`) and return its rows.

    ``limit`` caps the rows fetched (``truncated`` tells whether more existed). The query is
    interrupted after ``timeout_s`` seconds (default: ``Settings.query_timeout_s``; 0: no limit).
    DuckDB errors (unknown column, file access outside the results root, ...) become
    :class:`InputError`.
    """
    from ramanscreen.tasks.settings import get_settings

    check_read_only(sql)
    timeout = get_settings().query_timeout_s if timeout_s is None else float(timeout_s)
    timer = threading.Timer(timeout, con.interrupt) if timeout > 0 else None
    if timer is not None:
        timer.daemon = True
        timer.start()
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
    except duckdb.InterruptException:
        raise InputError(f"interrupted after the time limit of {timeout:g} s", field="query_timeout_s",
                         fix="narrow the query (WHERE, LIMIT, aggregates) or raise query_timeout_s "
                             "(RAMANSCREEN_QUERY_TIMEOUT_S)") from None
    except duckdb.Error as exc:
        raise InputError(_one_line(exc), field="query", fix="check table and column names with "
                         "`SELECT * FROM information_schema.columns`") from None
    finally:
        if timer is not None:
            timer.cancel()
    return QueryResult(columns, [tuple(r) for r in rows], truncated)
