"""SQLite is handed None as NaN and bools as ints (the sqlite3 module binds those cheapest):
what it stores is what binding the record's own values stored, value and type."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from store_support import make_record

from switchgear.store.records import COLUMNS, RequestRecord
from switchgear.store.sqlite import SQLiteConnection, insert_rows

#: Each column's value and storage class, as SQLite gives them back.
STORED = ", ".join(f"quote({column}), typeof({column})" for column in COLUMNS)


def test_sqlite_stores_what_plain_binding_stored(tmp_path: Path) -> None:
    nullable = [f.name for f in fields(RequestRecord) if f.default is None]
    empty = replace(make_record(1), **dict.fromkeys(nullable))
    flagged = replace(make_record(2), stream=True, truncated=True, refused=True,
                      schema_valid=False, output_passed=True,
                      saved_cost=float("nan"))
    records = [empty, flagged]
    store = SQLiteConnection(str(tmp_path / "store.db"), busy_timeout=5)
    plain = SQLiteConnection(str(tmp_path / "plain.db"), busy_timeout=5)
    try:
        store.migrate()
        plain.migrate()
        store.write(records)
        with plain.transaction() as cursor:
            cursor.execute(insert_rows(2), [value for record in records
                                            for value in record.values()])
        query = f"SELECT {STORED} FROM request_log ORDER BY request_id"
        stored = store.connection.execute(query).fetchall()
        assert stored == plain.connection.execute(query).fetchall()
        types = dict(zip(COLUMNS, stored[0][1::2], strict=True))
        assert {types[column] for column in nullable} == {"null"}
    finally:
        store.close()
        plain.close()
