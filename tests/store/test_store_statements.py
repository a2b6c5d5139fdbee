"""Multi-row INSERTs come in a handful of sizes, whatever the batch sizes: each distinct
statement text is one the driver prepares and keeps (SQLite's compiled program of a 500-row
INSERT is hundreds of kB), so a statement per batch size grew the gateway's memory for as long as
new sizes turned up (+7% RSS from the first 100,000 requests to 1,000,000, benchmarks/overhead
--rss-requests)."""

from __future__ import annotations

from pathlib import Path

from store_support import make_record

from switchgear.store.migrations import statement_slices
from switchgear.store.sqlite import SQLiteConnection


def test_slices_keep_every_row_in_order_in_few_sizes() -> None:
    sizes: set[int] = set()
    for count in range(0, 1100):
        rows = list(range(count))
        slices = [list(part) for part in statement_slices(rows, 256)]
        assert [row for part in slices for row in part] == rows
        sizes.update(len(part) for part in slices)
    assert sizes == {1, 2, 4, 8, 16, 32, 64, 128, 256}


def test_request_log_batches_of_every_size_use_a_handful_of_statements(tmp_path: Path) -> None:
    store = SQLiteConnection(str(tmp_path / "records.db"), busy_timeout=5)
    store.migrate()
    inserts: set[str] = set()
    store.connection.set_trace_callback(
        lambda sql: inserts.add(sql.split(" VALUES ")[0] + str(sql.count("), ("))
                                ) if sql.startswith("INSERT INTO request_log") else None)
    written = 0
    for size in range(1, 301):
        store.write([make_record(written + number) for number in range(size)])
        written += size
    assert store.connection.execute("SELECT count(*) FROM request_log").fetchone() == (written,)
    assert len(inserts) <= 9  # 1, 2, 4 ... 256 rows a statement
    store.connection.close()
