"""Config versions and change requests as rows of the record store (migration 12)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
import yaml

from switchgear.config import RESTART_SECTIONS, Config, ConfigError, parse_config
from switchgear.prompts.versions import template_versions, templates_of
from switchgear.store.base import RecordStore
from switchgear.store.migrations import CONFIG_CHANGES, CONFIG_VERSIONS, PROMPT_VERSIONS, Dialect

#: Who applied the version seeded from the YAML file.
SEED_AUTHOR = "config-file"


#: The password in a ``scheme://user:password@`` URL.
URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^\s:/?#@]*):[^\s/?#@]*@")
#: What a stored version has in place of a URL's password.
MASK = "***"


def masked(text: str) -> str:
    """``text`` with the password of every URL in it as ``***``."""
    return URL_PASSWORD.sub(rf"\1:{MASK}@", text)


def config_text(config: Config) -> str:
    """``config`` as the YAML a version keeps: defaults left out, so that diffs show choices,
    and the sections that need a restart left out, since each replica's file decides them.
    No secret is kept: the password of a URL (a Redis URL's) is ``***``, and each replica
    takes it from its own file."""
    data = config.model_dump(mode="json", exclude_defaults=True, exclude=set(RESTART_SECTIONS))
    return masked(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def serving_config(text: str, local: Config, source: str = "config version") -> Config:
    """The config a replica serves for a version's YAML: the version's sections, with the
    restart-only ones of the replica's own file and the URL passwords of that file (ConfigError
    when it is not valid, or names a URL whose password the file does not hold)."""
    data = yaml.safe_load(text) or {}
    secrets = {masked(value): value for value in _strings(local.model_dump(mode="json"))
               if masked(value) != value}
    data = _unmasked(data, secrets, source, "")
    data.update(local.model_dump(mode="json", include=set(RESTART_SECTIONS)))
    return parse_config(data, source)


def _strings(value: Any) -> list[str]:
    """Every string in loaded YAML/JSON ``value``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _unmasked(value: Any, secrets: dict[str, str], source: str, where: str) -> Any:
    """``value`` with each masked URL replaced by the replica's own (ConfigError if none)."""
    if isinstance(value, str) and f":{MASK}@" in value:
        if value not in secrets:
            raise ConfigError(f"{source}: {where.lstrip('.')}: the password of {value} is not "
                              "kept in config versions; give this URL, with its password, in "
                              "every replica's config file")
        return secrets[value]
    if isinstance(value, dict):
        return {key: _unmasked(item, secrets, source, f"{where}.{key}")
                for key, item in value.items()}
    if isinstance(value, list):
        return [_unmasked(item, secrets, source, f"{where}.{number}")
                for number, item in enumerate(value)]
    return value


def _marks(dialect: Dialect, sql: str) -> str:
    """``sql`` with its ``?`` bind marks spelled for ``dialect``."""
    if dialect == "sqlite":
        return sql
    parts = sql.split("?")
    return "".join(f"{part}${number}" for number, part in enumerate(parts[:-1], 1)) + parts[-1]


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """An applied config: its number, YAML, the change that made it, who applied it, when, and
    the version number of each prompt template (prompts/versions.py)."""

    version: int
    config: str
    change_id: str | None
    applied_by: str
    applied_at: float
    break_glass: bool
    prompt_versions: dict[str, int] = field(default_factory=dict)

    def public(self, with_config: bool = True) -> dict[str, Any]:
        """The version as JSON (its YAML only when asked)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if not with_config:
            del data["config"]
        return data


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """A proposed config, its diff and review, and the version it became once applied."""

    change_id: str
    status: str
    author: str
    message: str
    created_at: float
    base_version: int
    config: str
    diff: str
    #: The top-level sections it changes, comma-separated.
    sections: str
    needs_approval: bool
    rollback_of: int | None = None
    reviewer: str | None = None
    review: str | None = None
    review_comment: str | None = None
    reviewed_at: float | None = None
    applied_version: int | None = None
    break_glass: bool = False

    @property
    def review_required(self) -> bool:
        """Applied by break-glass and not reviewed yet."""
        return self.break_glass and self.status == "applied" and self.review is None

    def public(self) -> dict[str, Any]:
        """The change as JSON."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["sections"] = self.sections.split(",") if self.sections else []
        data["review_required"] = self.review_required
        return data


VERSION_COLUMNS = ", ".join(column.name for column in (*CONFIG_VERSIONS, PROMPT_VERSIONS))
CHANGE_COLUMNS = ", ".join(column.name for column in CONFIG_CHANGES)


class ConfigVersions:
    """Reads and writes ``config_versions`` and ``config_changes``; each write is one
    statement, and the conditional ones say whether they won."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store

    def _sql(self, sql: str) -> str:
        return _marks(self.store.dialect, sql)

    async def seed(self, config: Config) -> None:
        """Store ``config`` as version 1 unless a version exists (replicas may race: one wins)."""
        await self.add_version(ConfigVersion(1, config_text(config), None, SEED_AUTHOR,
                                             time.time(), False,
                                             template_versions({}, {}, config.prompts)))

    async def governed(self) -> bool:
        """Whether a change request was ever applied here (a change or a rollback), so that
        the store, not a config file, decides what serves."""
        rows = await self.store.rows(
            "SELECT count(*) FROM config_versions WHERE change_id IS NOT NULL")
        return int(rows[0][0] or 0) > 0

    async def add_file_version(self, config: Config, latest: ConfigVersion) -> ConfigVersion | None:
        """Store ``config`` (a config file) as the version after ``latest``; None when another
        replica took that number first."""
        text = config_text(config)
        version = ConfigVersion(
            latest.version + 1, text, None, SEED_AUTHOR, time.time(), False,
            template_versions(templates_of(latest.config), latest.prompt_versions,
                              config.prompts))
        return version if await self.add_version(version) else None

    async def latest_number(self) -> int:
        """The newest applied version's number (0 before the seed)."""
        rows = await self.store.rows("SELECT max(version) FROM config_versions")
        return int(rows[0][0] or 0)

    async def get(self, version: int | None = None) -> ConfigVersion | None:
        """Version ``version``, or the newest one."""
        if version is None:
            rows = await self.store.rows(
                f"SELECT {VERSION_COLUMNS} FROM config_versions ORDER BY version DESC LIMIT 1")
        else:
            rows = await self.store.rows(self._sql(
                f"SELECT {VERSION_COLUMNS} FROM config_versions WHERE version = ?"), (version,))
        return _version(rows[0]) if rows else None

    async def history(self, limit: int = 100) -> list[ConfigVersion]:
        """The newest versions first."""
        rows = await self.store.rows(self._sql(
            f"SELECT {VERSION_COLUMNS} FROM config_versions ORDER BY version DESC LIMIT ?"),
            (limit,))
        return [_version(row) for row in rows]

    async def applied_since(self, since: float, limit: int = 1000) -> list[ConfigVersion]:
        """The versions applied at ``since`` or later, oldest first (at most ``limit``)."""
        rows = await self.store.rows(self._sql(
            f"SELECT {VERSION_COLUMNS} FROM config_versions WHERE applied_at >= ? "
            "ORDER BY version LIMIT ?"), (since, limit))
        return [_version(row) for row in rows]

    async def add_version(self, version: ConfigVersion) -> bool:
        """Store ``version``; False when that number is taken (another apply won)."""
        return await self.store.execute(self._sql(
            f"INSERT INTO config_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (version) DO NOTHING"),
            (version.version, version.config, version.change_id, version.applied_by,
             version.applied_at, version.break_glass,
             orjson.dumps(version.prompt_versions).decode())) == 1

    async def add_change(self, change: ChangeRequest) -> None:
        """Store a new change request."""
        values = tuple(getattr(change, f.name) for f in fields(change))
        marks = ", ".join("?" * len(values))
        await self.store.execute(self._sql(
            f"INSERT INTO config_changes ({CHANGE_COLUMNS}) VALUES ({marks})"), values)

    async def change(self, change_id: str) -> ChangeRequest | None:
        """The change ``change_id``."""
        rows = await self.store.rows(self._sql(
            f"SELECT {CHANGE_COLUMNS} FROM config_changes WHERE change_id = ?"), (change_id,))
        return _change(rows[0]) if rows else None

    async def changes(self, limit: int = 100) -> list[ChangeRequest]:
        """The newest change requests first."""
        rows = await self.store.rows(self._sql(
            f"SELECT {CHANGE_COLUMNS} FROM config_changes ORDER BY created_at DESC LIMIT ?"),
            (limit,))
        return [_change(row) for row in rows]

    async def update_change(self, change_id: str, expected: tuple[str, ...],
                            **values: object) -> bool:
        """Set ``values`` on the change if its status is one of ``expected``; whether it was."""
        assignments = ", ".join(f"{name} = ?" for name in values)
        statuses = ", ".join("?" * len(expected))
        return await self.store.execute(self._sql(
            f"UPDATE config_changes SET {assignments} "
            f"WHERE change_id = ? AND status IN ({statuses})"),
            (*values.values(), change_id, *expected)) == 1


def _version(row: tuple[Any, ...]) -> ConfigVersion:
    version, config, change_id, applied_by, applied_at, break_glass, prompts = row
    return ConfigVersion(int(version), config, change_id, applied_by, applied_at,
                         bool(break_glass), orjson.loads(prompts) if prompts else {})


def _change(row: tuple[Any, ...]) -> ChangeRequest:
    values = dict(zip((column.name for column in CONFIG_CHANGES), row, strict=True))
    values["needs_approval"] = bool(values["needs_approval"])
    values["break_glass"] = bool(values["break_glass"])
    return ChangeRequest(**values)
