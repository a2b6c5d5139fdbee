"""``execute_all``: several statements in one transaction, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.migrations import placeholders


async def test_every_statement_takes_effect_and_the_changed_rows_add_up(
        store: RecordStore) -> None:
    mark = placeholders(store.dialect, 1)
    await store.execute("CREATE TABLE notes (body text PRIMARY KEY)")
    changed = await store.execute_all([
        (f"INSERT INTO notes (body) VALUES ({mark})", ["first"]),
        (f"INSERT INTO notes (body) VALUES ({mark})", ["second"]),
        (f"DELETE FROM notes WHERE body = {mark}", ["first"]),
    ])
    assert changed == 3
    assert await store.rows("SELECT body FROM notes") == [("second",)]
    assert await store.execute_all([]) == 0


async def test_a_failing_statement_takes_back_those_before_it(store: RecordStore) -> None:
    mark = placeholders(store.dialect, 1)
    await store.execute("CREATE TABLE notes (body text PRIMARY KEY)")
    await store.execute(f"INSERT INTO notes (body) VALUES ({mark})", ["taken"])
    with pytest.raises(StoreUnavailable):  # the primary key refuses the second
        await store.execute_all([
            (f"INSERT INTO notes (body) VALUES ({mark})", ["new"]),
            (f"INSERT INTO notes (body) VALUES ({mark})", ["taken"]),
        ])
    assert await store.rows("SELECT body FROM notes") == [("taken",)]
