"""The audit trail in SQLite and PostgreSQL: appends chain, replicas share one chain,
`switchgear audit verify` names each tampering made directly in the database, and tells a key
that is not the trail's from a tampered trail."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
import yaml
from click.testing import CliRunner

from switchgear.cli.main import main
from switchgear.config import ConfigError, parse_config
from switchgear.governance.audit import (
    GENESIS,
    AuditEntry,
    AuditTrail,
    ForeignTrail,
    chain,
    genesis,
)
from switchgear.governance.secret import AuditKey, key_id
from switchgear.governance.verify import verify
from switchgear.store import open_store

from servers import POSTGRES_URL

SECRET = "audit-test-secret-0123456789abcdef0123"
ACTIONS = ("admin.access", "key.create", "key.revoke", "config.propose", "config.approve",
           "config.apply")

#: What an attacker with the database owner's rights runs first: the append-only triggers go.
UNGUARD = {
    "sqlite": ("DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete"),
    "postgresql": ("DROP TRIGGER audit_log_append_only ON audit_log",),
}


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> str:
    """The audit key, set in the environment as in production."""
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", SECRET)
    return SECRET


def dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def trail(url: str) -> AuditTrail:
    config = parse_config({"store": {"url": url}})
    return AuditTrail(open_store(url), AuditKey.of(config, serving=True))


async def fill(url: str, count: int = len(ACTIONS)) -> None:
    audit = trail(url)
    await audit.store.open()
    audit.start()
    try:
        for number in range(count):
            await audit.record(ACTIONS[number % len(ACTIONS)], actor=f"key_{number}",
                               role="admin", tenant="acme", source="127.0.0.1",
                               target=f"target-{number}", details={"n": number})
    finally:
        await audit.store.close()


async def tamper(url: str, *statements: str) -> None:
    """Run SQL straight against the database, as someone bypassing Switchgear would."""
    if dialect(url) == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            for statement in statements:
                db.execute(statement)
        return
    schema = url.rsplit("schema=", 1)[1]
    connection = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def verify_cli(url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    config = tmp_path / "switchgear.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": url}}))
    result = CliRunner().invoke(main, ["audit", "verify", "--config", str(config), *args])
    return result.exit_code, result.output


def swap(first: int, second: int) -> tuple[str, ...]:
    return (f"UPDATE audit_log SET seq = -1 WHERE seq = {first}",
            f"UPDATE audit_log SET seq = {first} WHERE seq = {second}",
            f"UPDATE audit_log SET seq = {second} WHERE seq = -1")


TAMPERINGS = {
    "details edited": (("UPDATE audit_log SET details = '{\"n\":99}' WHERE seq = 3",),
                       "entry 3 was altered"),
    "actor edited": (("UPDATE audit_log SET actor = 'key_innocent' WHERE seq = 4",),
                     "entry 4 was altered"),
    "time edited": (("UPDATE audit_log SET at = at - 3600 WHERE seq = 2",), "entry 2 was altered"),
    "hash recomputed without the key": (
        ("UPDATE audit_log SET target = 'elsewhere', hash = prev_hash WHERE seq = 5",),
        "entry 5 was altered"),
    "first entry deleted": (("DELETE FROM audit_log WHERE seq = 1",), "entry 1 was removed"),
    "middle entry deleted": (("DELETE FROM audit_log WHERE seq = 3",), "entry 3 was removed"),
    "deleted and renumbered": (("DELETE FROM audit_log WHERE seq = 3",
                                "UPDATE audit_log SET seq = -seq WHERE seq > 3",
                                "UPDATE audit_log SET seq = -seq - 1 WHERE seq < 0"),
                               "entry 3 was removed"),
    "two entries swapped": (swap(3, 4), "entry 3 was reordered"),
    "first and last swapped": (swap(1, 6), "entry 1 was reordered"),
    "an entry copied to the end": (
        ("INSERT INTO audit_log SELECT 7, at, actor, role, tenant, source, action, target, "
         "details, prev_hash, hash FROM audit_log WHERE seq = 2",), "entry 7 was altered"),
}


def test_an_untouched_trail_is_intact(store_url: str, keyed: str, tmp_path: Path) -> None:
    asyncio.run(fill(store_url))
    code, output = verify_cli(store_url, tmp_path)
    assert code == 0, output
    assert "intact: 6 entries" in output


@pytest.mark.parametrize("case", TAMPERINGS)
def test_verify_names_each_tampering(store_url: str, keyed: str, tmp_path: Path,
                                     case: str) -> None:
    statements, named = TAMPERINGS[case]
    asyncio.run(fill(store_url))
    asyncio.run(tamper(store_url, *UNGUARD[dialect(store_url)], *statements))
    code, output = verify_cli(store_url, tmp_path)
    assert code == 1, output
    assert named in output, output


def test_deleting_the_newest_entries_is_caught_by_an_anchor(store_url: str, keyed: str,
                                                            tmp_path: Path) -> None:
    asyncio.run(fill(store_url))
    _, output = verify_cli(store_url, tmp_path)
    anchor = output.split("anchor ")[1].split()[0]
    assert anchor.startswith("6:")
    asyncio.run(tamper(store_url, *UNGUARD[dialect(store_url)],
                       "DELETE FROM audit_log WHERE seq >= 5"))
    assert verify_cli(store_url, tmp_path)[0] == 0  # a shorter chain is still a chain...
    code, output = verify_cli(store_url, tmp_path, "--anchor", anchor)
    assert code == 1 and "entry 5 was removed" in output  # ...but not the one anchored


def test_the_table_refuses_updates_and_deletes(store_url: str, keyed: str) -> None:
    asyncio.run(fill(store_url, 2))
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises((sqlite3.IntegrityError, asyncpg.RaiseError), match="append-only"):
            asyncio.run(tamper(store_url, statement))


OTHER_SECRET = "another-secret-" + "x" * 32


def test_a_different_key_is_a_wrong_key_not_tampering(store_url: str, keyed: str,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(fill(store_url, 2))
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", OTHER_SECRET)
    code, output = verify_cli(store_url, tmp_path)
    assert code == 3, output
    assert "TAMPERED" not in output
    assert (f"audit trail NOT CHECKED, wrong key: the key from SWITCHGEAR_AUDIT_SECRET (key id "
            f"{key_id(OTHER_SECRET.encode())}) is not the key this trail was sealed with (key id "
            f"{key_id(SECRET.encode())}); use the key the gateway used: set "
            "SWITCHGEAR_AUDIT_SECRET to it.") in output


def test_a_secret_exported_after_the_key_file_points_back_to_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's order: the gateway first ran with its generated key file, then the
    variable was exported."""
    monkeypatch.delenv("SWITCHGEAR_AUDIT_SECRET", raising=False)
    url = f"sqlite:///{tmp_path}/records.db"
    asyncio.run(fill(url, 3))
    key_file = tmp_path / "records.db.audit-key"
    code, output = verify_cli(url, tmp_path)
    assert code == 0 and f"audit key from the key file {key_file}" in output, output
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", OTHER_SECRET)
    code, output = verify_cli(url, tmp_path)
    assert code == 3 and "TAMPERED" not in output, output
    assert "audit key from SWITCHGEAR_AUDIT_SECRET" in output
    assert (f"the key file {key_file} holds that key: unset SWITCHGEAR_AUDIT_SECRET to use it"
            in output)


def test_an_altered_only_entry_with_the_right_key_is_tampering(
        store_url: str, keyed: str, tmp_path: Path) -> None:
    asyncio.run(fill(store_url, 1))
    asyncio.run(tamper(store_url, *UNGUARD[dialect(store_url)],
                       "UPDATE audit_log SET actor = 'key_innocent' WHERE seq = 1"))
    code, output = verify_cli(store_url, tmp_path)
    assert code == 1 and "audit trail TAMPERED: entry 1 was altered" in output, output


def test_the_first_entry_names_the_key_and_a_trail_from_before_still_verifies(
        store_url: str, keyed: str) -> None:
    asyncio.run(fill(store_url, 2))
    entries = asyncio.run(read(store_url))
    assert entries[0].prev_hash == genesis(SECRET.encode())
    assert entries[0].prev_hash.startswith(key_id(SECRET.encode()))
    older, previous = [], GENESIS
    for entry in entries:  # the same entries, chained from the old all-zero genesis
        draft = replace(entry, prev_hash=previous)
        sealed = replace(draft, hash=draft.seal(SECRET.encode()))
        older.append(sealed)
        previous = sealed.hash
    assert verify(older, SECRET.encode()).intact
    wrong = verify(older, OTHER_SECRET.encode()).wrong_key
    assert wrong is not None and wrong.trail is None


def test_a_gateway_with_another_key_refuses_to_extend_the_trail(
        store_url: str, keyed: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(fill(store_url, 1))
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", OTHER_SECRET)
    with caplog.at_level(logging.INFO, logger="switchgear.audit"), \
            pytest.raises(ForeignTrail, match=r"sealed with another key than this gateway's \(from "
                          rf"SWITCHGEAR_AUDIT_SECRET, key id {key_id(OTHER_SECRET.encode())}\)"):
        asyncio.run(fill(store_url, 1))
    said = [r.getMessage() for r in caplog.records]
    assert (f"audit key from SWITCHGEAR_AUDIT_SECRET (key id {key_id(OTHER_SECRET.encode())})"
            in said)
    assert verify(asyncio.run(read(store_url)), SECRET.encode()).intact  # nothing was appended


async def read(url: str) -> list[AuditEntry]:
    store = open_store(url)
    await store.open()
    try:
        return await chain(store)
    finally:
        await store.close()


async def test_replicas_appending_together_make_one_chain(store_url: str, keyed: str) -> None:
    replicas = [trail(store_url) for _ in range(3)]
    for replica in replicas:
        await replica.store.open()
        replica.start()
    try:
        await asyncio.gather(*(replica.record("admin.access", actor=f"replica-{number}",
                                              details={"i": i})
                               for number, replica in enumerate(replicas) for i in range(10)))
        entries = await chain(replicas[0].store)
    finally:
        for replica in replicas:
            await replica.store.close()
    verdict = verify(entries, SECRET.encode())
    assert verdict.intact and verdict.length == 30
    assert [e.seq for e in entries] == list(range(1, 31)) and entries[0].prev_hash == genesis(SECRET.encode())
    assert sorted((e.actor, e.details) for e in entries) == sorted(
        (f"replica-{n}", f'{{"i":{i}}}') for n in range(3) for i in range(10))


def test_verify_without_the_key_or_the_store_exits_2(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHGEAR_AUDIT_SECRET", raising=False)
    url = f"sqlite:///{tmp_path}/records.db"
    code, output = verify_cli(url, tmp_path)
    assert code == 2 and "SWITCHGEAR_AUDIT_SECRET" in output
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", SECRET)
    code, output = verify_cli(url, tmp_path)
    assert code == 2 and "no SQLite file" in output
    assert not (tmp_path / "records.db").exists()


def test_the_key_is_required_off_loopback_and_generated_on_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHGEAR_AUDIT_SECRET", raising=False)
    url = f"sqlite:///{tmp_path}/records.db"
    public = parse_config({"store": {"url": url}, "server": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="SWITCHGEAR_AUDIT_SECRET"):
        AuditKey.of(public, serving=True)
    local = AuditKey.of(parse_config({"store": {"url": url}}), serving=True)
    key = local.load(create=True)
    path = tmp_path / "records.db.audit-key"
    assert len(key) == 64 and path.read_bytes().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local.load(create=True) == key  # kept, not made again
    monkeypatch.setenv("SWITCHGEAR_AUDIT_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 32"):
        AuditKey.of(public, serving=True)


def test_serve_off_loopback_without_the_key_exits_2(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHGEAR_AUDIT_SECRET", raising=False)
    config = tmp_path / "public.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"host": "0.0.0.0"}, "store": {"url": f"sqlite:///{tmp_path}/records.db"},
        "models": {"sim": {"deployments": [{"name": "s", "backend": "simulated"}]}}}))
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and "SWITCHGEAR_AUDIT_SECRET" in result.output, result.output
