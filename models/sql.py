"""SQL written by hand, the same for every database: statements with `?` placeholders (each
backend puts them in its driver's style), transaction scripts, and the builders of the few
large statements the write paths use."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: A statement written with `?` placeholders, and its parameters.
Statement = tuple[str, list[Any]]


@dataclass(frozen=True, slots=True)
class Select:
    """A query a transaction script reads: its rows come back as tuples, in `columns` order
    (the query's result columns, by name)."""

    sql: str
    parameters: list[Any]
    columns: tuple[str, ...]
    #: The transaction is about to update the rows read: lock them, in the query's order,
    #: against concurrent writers (where the database has row locks).
    lock: bool = False


#: A transaction written once for every database: a generator that yields a Select (and is
#: sent its rows) or statements to execute (and is sent None), and returns its result.
#: A backend runs it in one transaction (models.backends.base.Backend.run); the script does
#: no I/O of its own, so on SQLite it can run in the writer process (or the database's thread).
Script = Generator[Select | Sequence[Statement], Any, T]
#: What a backend is given to run a script: `make(backend, *args)` answers it.
ScriptMaker = Callable[..., Script[T]]


# Bulk writes are few, large statements rather than executemany: executemany takes the GIL
# back for every row, while one statement binds its parameters and then runs without it, and
# under load each hand-off from the busy event loop waits out the switch interval
# (docs/performance-log.md#sqlite-statements).
#: Bound parameters per statement: SQLite allows 32,766, PostgreSQL 32,767.
PARAMETERS_PER_STATEMENT = 30_000


def chunk_sizes(count: int, largest: int, *, pad: bool = False) -> list[int]:
    """Statement sizes (in rows) for `count` rows: powers of two no larger than `largest`,
    largest first, adding up to `count`; with `pad`, what is left after the full chunks is
    one statement rounded up to a power of two (the caller pads its rows, see
    insert_statements).

    Statements are built for that many rows: a handful of distinct SQL texts, each
    prepared once and then found in the connection's statement cache. A text per batch
    size missed the cache every time, and preparing a large statement is dear
    (docs/performance-log.md#sqlite-statements)."""
    top = 1 << (max(1, largest).bit_length() - 1)
    sizes = []
    while count > 0:
        size = min(top, 1 << (count.bit_length() - 1))
        if pad and size < count < top:
            size = 1 << count.bit_length()  # the rest, in one padded statement
        sizes.append(size)
        count -= min(size, count)
    return sizes


def padded(values: Sequence[Any]) -> list[Any]:
    """`values` repeated at the end up to a power of two long, for an `IN (...)` list:
    the same few statement texts whatever the count (see chunk_sizes); duplicates in IN
    change nothing."""
    values = list(values)
    if not values:
        return values
    size = 1 << (len(values) - 1).bit_length()
    return values + [values[-1]] * (size - len(values))


def insert_statements(
    table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, pad: bool
) -> list[Statement]:
    """INSERT many rows in a few statements of cacheable sizes (see chunk_sizes).

    With `pad`, the rows after the last full chunk go in one statement, padded with rows of
    NULLs that its `WHERE column1 IS NOT NULL` leaves out: the first column of a row must
    never be NULL."""
    row_sql = "(" + ", ".join("?" * len(columns)) + ")"
    into = f"INSERT INTO {table} ({', '.join(columns)}) "
    statements = []
    start = 0
    for size in chunk_sizes(len(rows), PARAMETERS_PER_STATEMENT // len(columns), pad=pad):
        chunk = rows[start : start + size]
        start += size
        values = "VALUES " + ", ".join([row_sql] * size)
        parameters = [value for row in chunk for value in row]
        if len(chunk) < size:
            assert all(row[0] is not None for row in chunk), "the first column is the filter"
            parameters += [None] * (len(columns) * (size - len(chunk)))
        query = (
            f"{into}SELECT * FROM ({values}) WHERE column1 IS NOT NULL" if pad else into + values
        )
        statements.append((query, parameters))
    return statements


def update_statements(
    table: str,
    column: str,
    values: Mapping[Any, int],
    *,
    pad: bool,
    also: Mapping[str, Any] | None = None,
    integer_ids: bool = False,
) -> list[Statement]:
    """Set an integer `column` per row id (text ids, or integers with `integer_ids`),
    joining a VALUES list (statements of cacheable sizes, see chunk_sizes; with `pad`
    padded with (NULL, NULL) pairs, which match no row).

    A join, not `CASE id WHEN ... END`: a CASE is evaluated arm by arm for every row, so
    its cost grows with the square of the rows written. UPDATE ... FROM needs SQLite 3.33."""
    assignments = ", ".join([f"{column} = v.c1", *(f"{name} = ?" for name in (also or {}))])
    return _joined_updates(
        table,
        assignments,
        [(row_id, (value,)) for row_id, value in values.items()],
        pad=pad,
        also=list((also or {}).values()),
        integer_ids=integer_ids,
    )


def advance_statements(
    table: str,
    columns: Sequence[str],
    values: Mapping[str, Sequence[int | None]],
    *,
    greatest: str,
    pad: bool,
) -> list[Statement]:
    """Move integer `columns` forward per row id, all of them in one pass over the rows
    (a row rewritten once, not once per column): each to the greater of its value and the
    one given (NULL counts as lower than anything; a given None leaves it as it is),
    `greatest` being the database's two-argument maximum."""
    assignments = ", ".join(
        f"{column} = CASE WHEN v.c{i} IS NULL THEN {column}"
        f" ELSE {greatest}(COALESCE({column}, 0), v.c{i}) END"
        for i, column in enumerate(columns, start=1)
    )
    return _joined_updates(table, assignments, list(values.items()), pad=pad)


def _joined_updates(
    table: str,
    assignments: str,
    rows: Sequence[tuple[Any, Sequence[int | None]]],
    *,
    pad: bool,
    also: Sequence[Any] = (),
    integer_ids: bool = False,
) -> list[Statement]:
    """`UPDATE table SET assignments` joined to a VALUES list v(id, c1, c2, ...) of `rows`
    (id, integers), in statements of cacheable sizes; `also` are the parameters of
    `assignments` itself, after the list's."""
    if not rows:
        return []
    width = len(rows[0][1])
    names = ", ".join(["id", *(f"c{i}" for i in range(1, width + 1))])
    # PostgreSQL types a VALUES list's untyped parameters as text.
    row = (
        "("
        + ", ".join(["CAST(? AS BIGINT)" if integer_ids else "?", *["CAST(? AS BIGINT)"] * width])
        + ")"
    )
    statements = []
    start = 0
    largest = (PARAMETERS_PER_STATEMENT - len(also)) // (1 + width)
    for size in chunk_sizes(len(rows), largest, pad=pad):
        chunk = rows[start : start + size]
        start += size
        query = (
            f"WITH v({names}) AS (VALUES {', '.join([row] * size)}) "
            f"UPDATE {table} SET {assignments} FROM v WHERE {table}.id = v.id"
        )
        parameters: list[Any] = [value for row_id, ints in chunk for value in (row_id, *ints)]
        parameters += [None] * ((1 + width) * (size - len(chunk)))
        statements.append((query, parameters + list(also)))
    return statements
