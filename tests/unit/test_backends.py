"""The storage backend is chosen by DATABASE_URL's scheme, once, when the database is opened."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tortoise.backends.base.config_generator import expand_db_url

from claims_realtime.models import backends
from claims_realtime.models.backends import backend_for, backend_of
from claims_realtime.models.backends.postgres import PostgresBackend
from claims_realtime.models.backends.sqlite import SQLiteBackend
from claims_realtime.models.db import tortoise_config


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite://:memory:", SQLiteBackend),
        ("sqlite:///srv/claims.sqlite3", SQLiteBackend),
        ("sqlite:///srv/claims.sqlite3?cache_size=-8192", SQLiteBackend),
        ("SQLite:///srv/claims.sqlite3", SQLiteBackend),
        ("postgres://claims@db.internal:5432/claims", PostgresBackend),
        ("postgresql://claims@db.internal:5432/claims", PostgresBackend),
        ("asyncpg://claims:secret@127.0.0.1/claims?ssl=true", PostgresBackend),
    ],
)
def test_the_url_scheme_picks_the_backend(url: str, backend: type[backends.Backend]) -> None:
    assert type(backend_for(url)) is backend


@pytest.mark.parametrize("url", ["mysql://u@h/db", "claims.sqlite3", "redis://localhost"])
def test_a_database_no_backend_serves_is_refused_by_name(url: str) -> None:
    with pytest.raises(ValueError, match=r"DATABASE_URL must start with one of sqlite://"):
        backend_for(url)


@pytest.mark.parametrize("name", ["sqlite", "postgres"])
def test_a_migration_finds_the_backend_of_its_connection(name: str) -> None:
    connection = SimpleNamespace(capabilities=SimpleNamespace(dialect=name))
    assert backend_of(connection).name == name  # type: ignore[arg-type]


def test_each_backend_adds_its_own_connection_settings() -> None:
    sqlite = tortoise_config("sqlite:///srv/c.sqlite3")["connections"]["default"]
    # On SQLite, Tortoise's client is ours (models.backends.sqlite_client), hence a dict.
    assert sqlite["engine"] == "claims_realtime.models.backends.sqlite_client"
    assert sqlite["credentials"]["file_path"] == "/srv/c.sqlite3"
    assert sqlite["credentials"]["synchronous"] == "FULL"
    assert "maxsize" not in sqlite["credentials"]
    postgres = tortoise_config("postgres://u@h/db", pool_size=7)["connections"]["default"]
    assert postgres == "postgres://u@h/db?maxsize=7&minsize=1"


def test_libpqs_postgresql_scheme_reaches_tortoises_postgresql_engine() -> None:
    # The URL Tortoise gets, expanded as Tortoise does when it opens it.
    url = tortoise_config("postgresql://u:pw@h:6543/db", pool_size=3)["connections"]["default"]
    expanded = expand_db_url(url)
    assert expanded["engine"] == "tortoise.backends.asyncpg"
    credentials = expanded["credentials"]
    assert credentials["port"] == 6543 and str(credentials["maxsize"]) == "3"


@pytest.mark.usefixtures("db")
async def test_opening_the_database_makes_its_backend_current(database_url: str) -> None:
    expected = SQLiteBackend if database_url.startswith("sqlite://") else PostgresBackend
    assert type(backends.current()) is expected
