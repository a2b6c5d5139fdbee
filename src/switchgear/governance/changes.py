"""Change requests: propose, review, apply and roll back config versions, under the
two-person rule, with break-glass for emergencies.

A change is proposed against the newest applied version, as a whole config or as top-level
sections replacing the current ones, and validated with the same models as the file. It needs
approval by someone other than its author when it touches a section listed in
``governance.approval_required`` (or changes that list). Applying it makes the next version,
which every replica picks up; a change is refused (400) unless this replica can build what it
would serve (``Adoptable``), so that no replica is handed a version it cannot adopt.
Break-glass applies a change at once, without approval: loudly, and the change stays "review
required" until someone else reviews it. A change that sends a credential (``api_key_env``,
``headers_env``, ``query_env``) to a new or re-pointed upstream URL always needs approval, and
only an admin may break glass on it; a change to the governance section always needs approval too.
"""

from __future__ import annotations

import difflib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import yaml
from pydantic import ValidationError

from switchgear.config import (
    RESTART_SECTIONS,
    Config,
    ConfigError,
    ModelConfig,
    env_settings,
    own_secrets,
    parse_config,
)
from switchgear.errors import InvalidRequest, NotFound, PermissionDenied, SwitchgearError
from switchgear.governance.versions import (
    ChangeRequest,
    ConfigVersion,
    ConfigVersions,
    config_text,
    serving_config,
)
from switchgear.prompts.versions import template_versions, templates_of

log = logging.getLogger("switchgear.governance")

#: Fields that a running gateway cannot change inside sections it otherwise can.
RESTART_FIELDS = (("limits", "state_url"), ("limits", "state_url_env"), ("limits", "state_prefix"))


class ChangeConflict(SwitchgearError):
    """The change is not in a state that allows this (rejected, applied, or stale)."""

    status = 409
    type = "invalid_request_error"
    code = "change_conflict"


#: Checks that a version's YAML can serve on this replica (builds what it would serve, without
#: starting it); ConfigError saying why not.
Adoptable = Callable[[str], Awaitable[None]]


async def _parses(text: str) -> None:
    """The check of a ConfigChanges with no replica to ask: the YAML is a valid config."""
    parse_config(yaml.safe_load(text) or {}, "proposed config")


class ConfigChanges:
    """The change-request workflow over the store's versions and changes; ``adoptable``
    checks every config before it is proposed or applied."""

    def __init__(self, versions: ConfigVersions, adoptable: Adoptable = _parses) -> None:
        self.versions = versions
        self.adoptable = adoptable

    async def _check(self, text: str) -> None:
        """InvalidRequest (400) unless ``text`` can serve on this replica."""
        try:
            await self.adoptable(text)
        except ConfigError as error:
            raise InvalidRequest(f"This config cannot serve, so it is not stored: {error}",
                                 param="config") from None

    async def current(self) -> ConfigVersion:
        """The newest applied version."""
        version = await self.versions.get()
        if version is None:
            raise NotFound("No config version is stored yet.")
        return version

    async def propose(self, author: str, message: str, local: Config, *,
                      config: Mapping[str, Any] | None = None,
                      sections: Mapping[str, Any] | None = None,
                      rollback_of: int | None = None) -> ChangeRequest:
        """Propose a whole ``config`` or ``sections`` replacing the current ones, checked
        against ``local`` (this replica's file) for what needs a restart."""
        base_version = await self.current()
        if (config is None) == (sections is None):
            raise InvalidRequest("Give either config (a whole config) or sections (top-level "
                                 "sections to replace).", param="config")
        try:
            base: Config | None = serving_config(base_version.config, local,
                                                 f"config version {base_version.version}")
        except ConfigError as error:  # stored by an older release, valid no more
            if sections is not None:
                raise InvalidRequest(f"{error}; sections cannot be merged into it: propose a "
                                     "whole config instead.", param="sections") from None
            base = None
        submitted = dict(config if config is not None else sections or {})
        data = submitted if config is not None or base is None else {
            **base.model_dump(mode="json", exclude_defaults=True), **submitted}
        for name in RESTART_SECTIONS:
            data.setdefault(name, local.model_dump(mode="json", include={name})[name])
        try:
            proposed = parse_config(data, "proposed config")
        except ConfigError as error:
            raise InvalidRequest(str(error), param="config") from None
        refused = [name for name in RESTART_SECTIONS
                   if getattr(proposed, name) != getattr(local, name)]
        refused += [f"{section}.{name}" for section, name in RESTART_FIELDS
                    if getattr(getattr(proposed, section), name)
                    != getattr(getattr(local, section), name)]
        if refused:
            raise InvalidRequest(
                f"{', '.join(refused)} cannot change while the gateway runs: leave "
                f"{'it' if len(refused) == 1 else 'them'} as this replica has "
                f"{'it' if len(refused) == 1 else 'them'}, edit each replica's config file "
                "and restart it.", param="config")
        changed = [name for name in Config.model_fields
                   if base is None or getattr(base, name) != getattr(proposed, name)]
        if not changed:
            raise InvalidRequest(f"The proposal changes nothing against version "
                                 f"{base_version.version}.", param="config")
        for where, variable in env_settings(proposed):
            if variable in own_secrets(local):
                raise InvalidRequest(f"{where}: {variable} is one of this gateway's own "
                                     "secrets and is never sent anywhere", param="config")
        rules = (base or local).governance
        needs_approval = (any(name in rules.approval_required for name in changed)
                          or rules != proposed.governance
                          or bool(credentialed_upstreams(base.models if base else {},
                                                         proposed.models)))
        text = config_text(proposed)
        await self._check(text)
        change = ChangeRequest(
            change_id="chg_" + secrets.token_hex(6), status="pending", author=author,
            message=message, created_at=time.time(), base_version=base_version.version,
            config=text, sections=",".join(changed),
            diff=unified_diff(base_version.config, text, f"version {base_version.version}",
                              "proposed"),
            needs_approval=needs_approval, rollback_of=rollback_of)
        await self.versions.add_change(change)
        return change

    async def rollback(self, author: str, message: str, local: Config,
                       version: int) -> ChangeRequest:
        """Propose going back to ``version``: a change like any other."""
        earlier = await self.versions.get(version)
        if earlier is None:
            raise NotFound(f"No config version {version}.")
        try:
            config = serving_config(earlier.config, local, f"config version {version}"
                                    ).model_dump(mode="json", exclude_defaults=True)
        except ConfigError as error:
            raise InvalidRequest(f"Cannot roll back to it: {error}", param="version") from None
        for name in RESTART_SECTIONS:
            config.pop(name, None)
        return await self.propose(author, message or f"roll back to version {version}", local,
                                  config=config, rollback_of=version)

    async def change(self, change_id: str) -> ChangeRequest:
        """The change ``change_id``."""
        change = await self.versions.change(change_id)
        if change is None:
            raise NotFound(f"No change request {change_id}.")
        return change

    async def review(self, change_id: str, reviewer: str, approve: bool,
                     comment: str) -> ChangeRequest:
        """Approve or reject a pending change, or review one applied by break-glass; never
        by its author."""
        change = await self.change(change_id)
        if reviewer == change.author:
            raise PermissionDenied("The author of a change cannot review it: another person "
                                   "must approve or reject it.")
        if change.status != "pending" and not change.review_required:
            raise ChangeConflict(f"Change {change_id} is {change.status} and needs no review.")
        decision = "approved" if approve else "rejected"
        status = decision if change.status == "pending" else change.status
        reviewed = replace(change, status=status, reviewer=reviewer, review=decision,
                           review_comment=comment, reviewed_at=time.time())
        if not await self.versions.update_change(
                change_id, (change.status,), status=status, reviewer=reviewer, review=decision,
                review_comment=comment, reviewed_at=reviewed.reviewed_at):
            raise ChangeConflict(f"Change {change_id} changed meanwhile; look at it again.")
        return reviewed

    async def apply(self, change_id: str, actor: str, break_glass: bool = False,
                    admin: bool = True) -> ChangeRequest:
        """Make the change the next config version; with ``break_glass``, even unapproved,
        except a change adding or re-pointing an upstream that carries a credential, which only
        an ``admin`` may break-glass."""
        change = await self.change(change_id)
        if change.status == "rejected":
            raise ChangeConflict(f"Change {change_id} was rejected; a rejected change is never "
                                 "applied.")
        if change.status == "applied":
            raise ChangeConflict(f"Change {change_id} is already applied as version "
                                 f"{change.applied_version}.")
        unapproved = change.needs_approval and change.status != "approved"
        if unapproved and not break_glass:
            raise PermissionDenied(f"Change {change_id} changes {change.sections}, which needs "
                                   "approval by someone other than its author (or --break-glass "
                                   "in an emergency).")
        latest = await self.current()
        if latest.version != change.base_version:
            raise ChangeConflict(f"Change {change_id} was proposed against version "
                                 f"{change.base_version}, but version {latest.version} is "
                                 "applied now; propose it again.")
        upstreams = _credentialed(latest.config, change.config)
        if upstreams and change.status != "approved":
            if not break_glass:
                raise PermissionDenied(
                    f"Change {change_id} sends a credential to a new or re-pointed upstream "
                    f"({', '.join(upstreams)}), which needs approval by someone other than its "
                    "author.")
            if not admin:
                raise PermissionDenied(
                    f"Change {change_id} sends a credential to a new or re-pointed upstream "
                    f"({', '.join(upstreams)}): only an admin may apply it without approval.")
            unapproved = True
        await self._check(change.config)
        number, glass = latest.version + 1, unapproved
        if not await self.versions.update_change(change_id, ("pending", "approved"),
                                                 status="applied", applied_version=number,
                                                 break_glass=glass):
            raise ChangeConflict(f"Change {change_id} changed meanwhile; look at it again.")
        numbers = template_versions(templates_of(latest.config), latest.prompt_versions,
                                    templates_of(change.config))
        version = ConfigVersion(number, change.config, change_id, actor, time.time(), glass,
                                numbers)
        if not await self.versions.add_version(version):
            await self.versions.update_change(change_id, ("applied",), status=change.status,
                                              applied_version=None, break_glass=False)
            raise ChangeConflict(f"Another change became version {number} meanwhile; propose "
                                 "this one again.")
        if glass:
            log.warning("BREAK-GLASS: change %s (%s) applied by %s as config version %d without "
                        "approval; it must be reviewed", change_id, change.sections, actor,
                        number)
        return replace(change, status="applied", applied_version=number, break_glass=glass)


def credentialed_upstreams(old: Mapping[str, ModelConfig], new: Mapping[str, ModelConfig]
                           ) -> list[str]:
    """The deployments (``alias/name``) of the ``new`` model section that send a credential
    (``api_key_env``, a ``headers_env`` or ``query_env`` value) to a URL the ``old`` one did
    not send that credential to."""
    known = {(d.url, variable) for model in old.values() for d in model.deployments
             for variable in d.secret_variables()}
    return [f"{alias}/{d.name}" for alias, model in new.items() for d in model.deployments
            if any((d.url, variable) not in known for variable in d.secret_variables())]


def _credentialed(old: str, new: str) -> list[str]:
    """``credentialed_upstreams`` of two versions' YAML (every credentialed deployment of
    ``new`` when ``old``'s models no longer parse)."""
    return credentialed_upstreams(_models_of(old), _models_of(new))


def _models_of(text: str) -> dict[str, ModelConfig]:
    """The model section of a version's YAML ({} when it is not valid)."""
    data = yaml.safe_load(text) or {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        return {}
    try:
        return {str(alias): ModelConfig.model_validate(model) for alias, model in models.items()}
    except ValidationError:
        return {}


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    """A unified diff of two configs' YAML."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True), old_name, new_name))
