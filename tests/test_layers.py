"""Imports go down the layers only: a module may import its own package, the layers below its
own, and in its own layer only the siblings ``SIBLINGS`` names.

Every import counts: module-level and inside functions, ``import x`` and ``from x import y``,
relative ones, and those under ``if TYPE_CHECKING:`` (a type-only import still ties the lower
layer's API to the upper one, and mypy reads it).
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

import switchgear

#: Lowest first. A name is a package under ``src/switchgear/`` or a top-level module; the root
#: package itself (``__version__``) is ``switchgear``.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    # what every layer uses, and which knows nothing of the others
    ("foundation", frozenset({"switchgear", "errors", "exchange", "background", "percentiles",
                               "ids", "protocols"})),
    # the config file's sections that a domain package reads (tiers, SLOs, prompt templates,
    # the scorecard's facts, what a guard check needs to run), and the value types they use
    ("sections", frozenset({"sections"})),
    ("config", frozenset({"config"})),
    ("store", frozenset({"store"})),
    # the parts the pipeline is assembled from, and the records' readers the gateway serves
    ("domain", frozenset({"admission", "backends", "cache", "engine", "guards", "ledger",
                          "prompts", "quality", "reports", "routing", "simulator", "slo",
                          "telemetry"})),
    # the control plane and the operator's tools, over the domain and the store
    ("control and insight", frozenset({"capacity", "governance", "scorecard"})),
    ("pipeline", frozenset({"pipeline"})),
    # the Batch API's files, batches and runner, over the store and through the pipeline
    ("batch", frozenset({"batch"})),
    # the ASGI app and the runtime that owns every part (gateway/state.py)
    ("gateway", frozenset({"gateway"})),
    ("cli", frozenset({"cli"})),
    ("entry point", frozenset({"__main__"})),  # python -m switchgear
)

#: Within a layer, who may import whom; siblings not named here stay independent.
SIBLINGS: Mapping[str, frozenset[str]] = MappingProxyType({
    "backends": frozenset({"engine", "simulator", "telemetry"}),  # engines, spans
    "routing": frozenset({"backends"}),  # a deployment wraps a backend
    "quality": frozenset({"routing", "telemetry"}),  # experiments' variants, metrics
    "guards": frozenset({"quality"}),  # the refusal check is quality's heuristic
    "slo": frozenset({"telemetry"}),
    "protocols": frozenset({"errors", "exchange"}),  # a bad body is an InvalidRequest
    "scorecard": frozenset({"governance"}),  # versions and the audit chain as evidence
})

PACKAGE = Path(switchgear.__file__).parent
LAYER_OF = MappingProxyType({name: index for index, (_, names) in enumerate(LAYERS)
                             for name in names})


def module_name(path: Path) -> str:
    """``switchgear.a.b`` for ``src/switchgear/a/b.py`` (a package is its ``__init__``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of a ``switchgear`` module in ``source``, wherever it
    stands; ``from switchgear.x import y`` names ``switchgear.x.y`` when that is a module."""
    here = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[:len(here.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [_submodule(base, alias.name) for alias in node.names]
        else:
            continue
        for target in dict.fromkeys(targets):  # once per statement
            if target == "switchgear" or target.startswith("switchgear."):
                yield node.lineno, target


def _submodule(base: str, name: str) -> str:
    """``base.name`` when that is a module of the package, else ``base``."""
    candidate = PACKAGE.parent.joinpath(*base.split("."), name)
    return f"{base}.{name}" if candidate.is_dir() or candidate.with_suffix(".py").is_file() else base


def unit(module: str) -> str:
    """The name the layers use for ``module``: its package under switchgear, or itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "switchgear"


def upward(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (None when it may)."""
    own, other = unit(importer), unit(imported)
    if own == other:
        return None
    own_layer, other_layer = LAYER_OF[own], LAYER_OF[other]
    if other_layer < own_layer or other in SIBLINGS.get(own, frozenset()):
        return None
    if other_layer == own_layer:
        return f"{own} and {other} are siblings in {LAYERS[own_layer][0]}, not listed in SIBLINGS"
    return f"{own} ({LAYERS[own_layer][0]}) is below {other} ({LAYERS[other_layer][0]})"


def all_imports() -> Iterator[tuple[str, int, str]]:
    """(importing module with line, imported module) for every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for line, target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            yield module, line, target


def test_every_package_has_one_layer() -> None:
    """A new package or top-level module must be placed before it can import anything."""
    names = [name for _, names in LAYERS for name in names]
    assert len(names) == len(set(names))
    found = {unit(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert found - set(names) == set(), "place these in LAYERS"
    assert set(names) - found == set(), "LAYERS names what is not there"


def test_siblings_are_in_one_layer_and_acyclic() -> None:
    """A sibling rule joins two names of the same layer, and never both ways round."""
    for own, others in SIBLINGS.items():
        assert all(LAYER_OF[other] == LAYER_OF[own] for other in others), own
    graphlib.TopologicalSorter(dict(SIBLINGS)).prepare()  # CycleError on a cycle


def test_imports_go_down_the_layers() -> None:
    """No module imports from a layer above its own or from a sibling it may not use."""
    problems = [f"{importer}:{line} imports {imported}: {why}"
                for importer, line, imported in all_imports()
                if (why := upward(importer, imported)) is not None]
    assert problems == [], "\n".join(["imports that go up:", *problems])

