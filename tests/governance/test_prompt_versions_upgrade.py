"""Migration 13 on a store that already holds config versions (SQLite and PostgreSQL): the old
versions read back with no template numbers (their templates served as version 1), and the
first apply after the upgrade counts on from there: an edited template is version 2."""

from __future__ import annotations

import pytest

from switchgear.config import parse_config
from switchgear.governance.changes import ConfigChanges
from switchgear.governance.versions import ConfigVersions, config_text
from switchgear.store import open_store, postgres, sqlite
from switchgear.store.migrations import pending

TEMPLATE = {"messages": [{"role": "system", "content": "Hello {{name}}"}]}


async def test_versions_written_before_migration_13_keep_working(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:  # a store as release 12 left it
        for module in (sqlite, postgres):
            patch.setattr(module, "pending",
                          lambda applied: [m for m in pending(applied) if m.version <= 12])
        old = open_store(store_url)
        await old.open()
        config = parse_config({"prompts": {"hello": TEMPLATE}})
        await old.execute(
            "INSERT INTO config_versions (version, config, change_id, applied_by, applied_at, "
            "break_glass) VALUES (1, 'prompts:\n  hello:\n    messages:\n    - role: system\n"
            "      content: Hello {{name}}\n', NULL, 'config-file', 1.0, FALSE)")
        await old.close()
    store = open_store(store_url)
    await store.open()
    try:
        versions = ConfigVersions(store)
        seeded = await versions.get(1)
        assert seeded is not None and seeded.prompt_versions == {}
        assert seeded.config == config_text(config)
        changes = ConfigChanges(versions)
        edited = {"hello": {"messages": [{"role": "system", "content": "Hi {{name}}"}]}}
        change = await changes.propose("alice", "", config, sections={"prompts": edited})
        await changes.review(change.change_id, "bob", True, "")
        await changes.apply(change.change_id, "alice")
        applied = await versions.get(2)
        assert applied is not None and applied.prompt_versions == {"hello": 2}
    finally:
        await store.close()
