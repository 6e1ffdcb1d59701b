"""The TimescaleDB telemetry migration, checked where no server with the extension is at
hand: it parses as PostgreSQL, offers the same tables and columns as the plain variant (so
the same queries run on both), and calls TimescaleDB's API only with arguments it has.
(Where the extension is installed, the whole suite runs on that variant instead.)"""

from __future__ import annotations

from pathlib import Path

import pglast
import pytest
from pglast import ast

SQL = Path(__file__).resolve().parents[2] / "sql"

# TimescaleDB 2.x API: each function's parameter names (docs.timescale.com/api).
TIMESCALEDB_API = {
    "create_hypertable": {"relation", "main_table", "time_column_name", "dimension",
                          "partitioning_column", "number_partitions", "chunk_time_interval",
                          "create_default_indexes", "if_not_exists", "partitioning_func",
                          "migrate_data", "chunk_target_size", "chunk_sizing_func",
                          "time_partitioning_func"},
    "add_compression_policy": {"hypertable", "compress_after", "if_not_exists",
                               "schedule_interval", "initial_start", "timezone",
                               "compress_created_before"},
    "add_retention_policy": {"relation", "drop_after", "if_not_exists", "schedule_interval",
                             "initial_start", "timezone", "drop_created_before"},
    "add_continuous_aggregate_policy": {"continuous_aggregate", "start_offset", "end_offset",
                                        "schedule_interval", "if_not_exists", "initial_start",
                                        "timezone"},
}


def _statements(name: str) -> list:
    return [raw.stmt for raw in pglast.parse_sql((SQL / name).read_text())]


def _tables(statements: list) -> dict[str, list[tuple[str, str]]]:
    """Each created table's columns as (name, type)."""
    return {s.relation.relname: [(c.colname, ".".join(n.sval for n in c.typeName.names))
                                 for c in s.tableElts if isinstance(c, ast.ColumnDef)]
            for s in statements if isinstance(s, ast.CreateStmt) and s.tableElts}


def _walk(node):
    """Every AST node under ``node``, itself included."""
    if isinstance(node, ast.Node):
        yield node
        for attribute in node:
            yield from _walk(getattr(node, attribute))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)


def _view_columns(statement: ast.CreateTableAsStmt) -> list[str]:
    return [target.name or target.val.fields[-1].sval for target in statement.query.targetList]


@pytest.fixture(scope="module")
def timescale():
    return _statements("0002_telemetry.timescaledb.sql")


@pytest.fixture(scope="module")
def plain():
    return _statements("0002_telemetry.plain.sql")


@pytest.mark.parametrize("table", ["gpu_metrics", "machine_metrics"])
def test_raw_tables_have_the_same_columns_on_both_variants(timescale, plain, table):
    assert _tables(timescale)[table] == _tables(plain)[table]


@pytest.mark.parametrize("rollup", ["gpu_metrics_1m", "gpu_metrics_1h"])
def test_continuous_aggregates_have_the_rollup_tables_columns(timescale, plain, rollup):
    [view] = [s for s in timescale if isinstance(s, ast.CreateTableAsStmt)
              and s.into.rel.relname == rollup]
    assert {(o.defnamespace, o.defname) for o in view.into.options} >= {
        ("timescaledb", "continuous")}
    assert view.into.skipData  # WITH NO DATA: a migration runs inside a transaction
    assert _view_columns(view) == [name for name, _ in _tables(plain)["gpu_metrics_1m"]]


def test_timescaledb_functions_are_called_with_arguments_they_have(timescale):
    calls = [node for statement in timescale for node in _walk(statement)
             if isinstance(node, ast.FuncCall) and node.funcname[-1].sval in TIMESCALEDB_API]
    assert {c.funcname[-1].sval for c in calls} == set(TIMESCALEDB_API)
    for call in calls:
        name = call.funcname[-1].sval
        named = {a.name for a in call.args if isinstance(a, ast.NamedArgExpr)}
        assert named <= TIMESCALEDB_API[name], (name, named - TIMESCALEDB_API[name])
