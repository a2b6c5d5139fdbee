"""open_store picks the store from the URL; redact_url hides passwords."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from store_support import POSTGRES_URL, WAIT, StoreBench, drop_schema

from switchgear.store import open_store
from switchgear.store.base import RecordStore, redact_url
from switchgear.store.migrations import MIGRATIONS
from switchgear.store.postgres import PostgresStore
from switchgear.store.sqlite import SQLiteStore

ALL_VERSIONS = [migration.version for migration in MIGRATIONS]


async def test_sqlite_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///records.db")
    assert isinstance(store, SQLiteStore)
    await store.open()
    await store.close()
    assert (tmp_path / "records.db").is_file()


def test_sqlite_absolute_url(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/records.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == f"{tmp_path}/records.db"
    assert isinstance(store, RecordStore)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_postgres_url_schema_parameter_selects_the_schema(scheme: str) -> None:
    schema = f"sg_test_{uuid.uuid4().hex}"
    url = POSTGRES_URL.replace("postgresql", scheme, 1)
    store = open_store(f"{url}?schema={schema}&application_name=switchgear-test")
    assert isinstance(store, PostgresStore)
    assert store.schema == schema
    bench = StoreBench("postgresql", url, schema=schema, made=[store])
    try:
        async with asyncio.timeout(WAIT):
            await store.open()
        assert (await bench.inspect()).versions == ALL_VERSIONS
    finally:
        await bench.close_all()
        await drop_schema(schema)


@pytest.mark.parametrize("url", ["mysql://root@localhost/db", "sqlite:relative.db", "sqlite:///"])
def test_unknown_or_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_refusal_hides_the_password() -> None:
    with pytest.raises(ValueError) as refusal:
        open_store("mysql://root:topsecret@localhost/db")
    assert "topsecret" not in str(refusal.value)


def test_schema_name_must_be_a_plain_identifier() -> None:
    with pytest.raises(ValueError):
        PostgresStore(POSTGRES_URL, schema="x; DROP TABLE users")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40w@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://u@h/db?password=pw&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("sqlite:///records.db", "sqlite:///records.db"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
