"""The lock (requirements/*.txt, written by scripts/lock) agrees with pyproject.toml and with what
is installed: a dependency added, dropped or re-ranged in pyproject.toml without re-locking fails
here, and so does a distribution in the virtual environment that the lock does not pin."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("serve", "dev", "build")
#: Why a pin is in a lock: pyproject.toml asks for it, requirements/build.in does, or another pin.
PYPROJECT = "switchgear (pyproject.toml)"
BUILD_IN = "-r requirements/build.in"


@dataclass
class Pin:
    """One entry of a lock: a distribution at a version (under a marker), its hashes, its reasons."""

    name: str
    version: Version
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def read_lock(name: str) -> list[Pin]:
    """The entries of ``requirements/<name>.txt``, in uv's `pip compile` format."""
    pins: list[Pin] = []
    in_via = False
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        entry = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line)
        if entry:
            pins.append(Pin(canonicalize_name(entry[1]), Version(entry[2])))
            in_via = False
        elif pins and (digest := re.search(r"--hash=(sha256:[0-9a-f]{64})", line)):
            pins[-1].hashes.append(digest[1])
        elif pins and (reason := re.match(r"^\s+# via ?(.*)$", line)):
            in_via = True
            if reason[1]:
                pins[-1].via.append(reason[1].strip())
        elif pins and in_via and (reason := re.match(r"^\s+#\s{3}(.+)$", line)):
            pins[-1].via.append(reason[1].strip())
    return pins


def pyproject() -> dict[str, object]:
    """pyproject.toml, parsed."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(name: str) -> list[Requirement]:
    """What the lock ``name`` is resolved from: pyproject.toml's sections, or build.in's lines."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    if name == "build":
        lines = (ROOT / "requirements" / "build.in").read_text().splitlines()
        return [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    wanted = list(project["dependencies"])
    if name == "dev":
        wanted += project["optional-dependencies"]["dev"]
    return [Requirement(text) for text in wanted]


def versions(pins: Iterable[Pin]) -> dict[str, set[Version]]:
    """Each pinned distribution's versions (more than one where markers split it)."""
    found: dict[str, set[Version]] = {}
    for pin in pins:
        found.setdefault(pin.name, set()).add(pin.version)
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_every_requirement_is_pinned_within_its_range(lock: str) -> None:
    pinned = versions(read_lock(lock))
    for requirement in requirements(lock):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is not in requirements/{lock}.txt: run scripts/lock"
        outside = [v for v in pinned[name] if not requirement.specifier.contains(v, prereleases=True)]
        assert not outside, f"requirements/{lock}.txt pins {name} {outside}, outside {requirement}"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_is_still_wanted_and_hashed(lock: str) -> None:
    pins = read_lock(lock)
    direct = {canonicalize_name(r.name) for r in requirements(lock)}
    names = {pin.name for pin in pins}
    for pin in pins:
        assert pin.hashes, f"{pin.name} has no hash in requirements/{lock}.txt"
        reasons = [v for v in pin.via if not v.startswith("-c ")]
        assert reasons, f"nothing asks for {pin.name} in requirements/{lock}.txt"
        for reason in reasons:
            if reason in (PYPROJECT, BUILD_IN):
                assert pin.name in direct, f"{pin.name} is no longer asked for: run scripts/lock"
            else:
                assert canonicalize_name(reason) in names, f"{pin.name} is there for {reason}"


@pytest.mark.parametrize("lock", ["serve", "build"])
def test_locks_agree_with_the_development_lock(lock: str) -> None:
    dev = versions(read_lock("dev"))
    for name, pinned in versions(read_lock(lock)).items():
        if name in dev:
            assert pinned == dev[name], f"{name}: requirements/{lock}.txt {pinned}, dev.txt {dev[name]}"


def test_every_installed_distribution_is_pinned() -> None:
    pinned = versions(read_lock("dev")) | versions(read_lock("build"))
    for distribution in metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        if name == "switchgear":
            continue
        assert name in pinned, f"{name} is installed but not in the lock"
        assert Version(distribution.version) in pinned[name], (
            f"{name} {distribution.version} is installed, the lock pins {pinned[name]}")
