"""The built-in price table of common hosted models (``prices.yaml`` beside this module).

A deployment that gives no ``price`` of its own and whose upstream ``model`` names a model in the
table is charged the table's prices (config.py's ``DeploymentConfig.charged_price``). The table
is package data, read once at import into a read-only mapping; nothing is fetched at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import yaml

#: Table field → the ``Price`` field it sets.
FIELDS = MappingProxyType({"input": "input_per_million", "output": "output_per_million",
                           "cached_input": "cached_input_per_million",
                           "cache_write": "cache_write_per_million"})
#: A snapshot's date suffix (``-20250929``, ``-2024-08-06``), dropped to find its model.
DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


def _load(path: Path) -> tuple[str, Mapping[str, Mapping[str, float]]]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    models = {str(name): MappingProxyType({FIELDS[field]: float(value)
                                           for field, value in entry.items()})
              for name, entry in data["models"].items()}
    return str(data["version"]), MappingProxyType(models)


#: The table's version (its date) and the price fields of each model it knows.
TABLE_VERSION, PRICES = _load(Path(__file__).with_name("prices.yaml"))


def builtin_price(model: str) -> Mapping[str, float] | None:
    """The ``Price`` fields the table gives ``model`` (an exact name, else the name without a
    date suffix, else a name the table knows after a ``provider/`` prefix); None: unknown."""
    for name in (model, DATE_SUFFIX.sub("", model)):
        for candidate in (name, name.rpartition("/")[2]):
            if candidate in PRICES:
                return PRICES[candidate]
    return None
