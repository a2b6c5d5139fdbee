"""A report's query (a scan of a whole window) gets the PostgreSQL store's longer bound; every
other query keeps the short one that protects the gateway from a database that hangs."""

from __future__ import annotations

import uuid

import pytest
from store_support import drop_schema

from switchgear.store.base import StoreUnavailable
from switchgear.store.postgres import PostgresStore

from servers import POSTGRES_URL

#: Longer than the short bound below, far shorter than the report bound.
QUERY = "SELECT pg_sleep(1.0), 1"


async def test_a_report_query_outlives_the_short_bound_that_stops_other_queries() -> None:
    schema = f"sg_test_{uuid.uuid4().hex}"
    store = PostgresStore(POSTGRES_URL, schema=schema, report_timeout=60.0)
    try:
        await store.open()
        store.timeout = 0.3  # after opening: connecting and migrating keep the default bound
        with pytest.raises(StoreUnavailable):
            await store.rows(QUERY)
        assert [row[1] for row in await store.rows(QUERY, report=True)] == [1]
    finally:
        await store.close()
        await drop_schema(schema)
