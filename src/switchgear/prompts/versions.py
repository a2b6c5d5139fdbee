"""Template version numbers: counted by the config versions that change each template.

Nobody types a template's version. When a config version is applied, each template it holds is
compared with the one the previous version held: unchanged, it keeps its number; new or
changed, it gets the next one. The numbers are kept with the config version (its
``prompt_versions``). A removed template keeps its last number there, so one added again
continues after it and a number never names two different texts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from switchgear.sections.prompts import PromptTemplate


def templates_of(config_text: str) -> dict[str, PromptTemplate]:
    """The templates of a config version's YAML (none when it has no ``prompts:``)."""
    data: Any = yaml.safe_load(config_text) or {}
    return {name: PromptTemplate.model_validate(template)
            for name, template in (data.get("prompts") or {}).items()}


def template_versions(previous: Mapping[str, PromptTemplate], numbers: Mapping[str, int],
                      current: Mapping[str, PromptTemplate]) -> dict[str, int]:
    """The version number of every template ever defined, once ``current`` follows
    ``previous`` (whose numbers were ``numbers``)."""
    result = dict(numbers)
    for name, template in current.items():
        # a template of a version stored before numbers were kept served as version 1
        last = numbers.get(name, 1 if name in previous else 0)
        result[name] = last if previous.get(name) == template else last + 1
    return result


def changed_templates(previous: Mapping[str, PromptTemplate],
                      current: Mapping[str, PromptTemplate],
                      numbers: Mapping[str, int]) -> dict[str, int | None]:
    """What a config version did to the templates of the one before: name → the new version
    (``numbers``) of a template it added or changed, or None for one it removed."""
    changed: dict[str, int | None] = {name: numbers.get(name, 1) for name, template
                                      in current.items() if previous.get(name) != template}
    changed.update({name: None for name in previous if name not in current})
    return changed
