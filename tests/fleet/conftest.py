"""A fleet for each test: three `switchgear serve` replicas behind nginx, sharing PostgreSQL and
Redis, in front of two `switchgear simulate` model servers."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from fleet_harness import Fleet, ModelServer, Replica, replica_config, stop_all

from servers import POSTGRES_URL, drop_schema, load_balancer


@pytest.fixture
def fleet(tmp_path: Path, prefix: str) -> Iterator[Fleet]:
    """Three replicas started together behind nginx, sharing a PostgreSQL schema of their own
    (dropped afterwards) and Redis keys under ``prefix`` (removed afterwards); logs and nginx's
    files in the test's tmp_path."""
    schema = f"sg_fleet_{uuid.uuid4().hex}"
    store_url = f"{POSTGRES_URL}?schema={schema}"
    admin_key = "sg-fleet-" + secrets.token_urlsafe(16)
    environment = {**os.environ, "SWITCHGEAR_ADMIN_KEY": admin_key,
                   "SWITCHGEAR_AUDIT_SECRET": secrets.token_urlsafe(32)}
    try:
        with ExitStack() as running:
            fleet_model = ModelServer(tmp_path)
            running.callback(fleet_model.stop)
            replica_model = ModelServer(tmp_path)
            running.callback(replica_model.stop)
            config = tmp_path / "switchgear.yaml"
            config.write_text(yaml.safe_dump(
                replica_config(store_url, prefix, fleet_model.url, replica_model.url)))
            replicas = [Replica(config, tmp_path, environment) for _ in range(3)]
            running.callback(stop_all, replicas)
            for replica in replicas:
                replica.wait_ready()
            url = running.enter_context(
                load_balancer([r.port for r in replicas], tmp_path / "nginx"))
            yield Fleet(url, replicas, fleet_model, replica_model, store_url, admin_key)
    finally:
        asyncio.run(drop_schema(schema))
