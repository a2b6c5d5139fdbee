"""The browser tests never skip: without Chromium they fail and say how to install it."""

from __future__ import annotations

import shutil

import pytest
from webdriver import INSTALL_HINT, browser_paths


def test_a_missing_browser_fails_with_the_command_that_installs_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AssertionError) as missing:
        browser_paths()
    assert "scripts/setup --dev" in str(missing.value) and INSTALL_HINT in str(missing.value)


def test_this_machine_has_the_browser_and_its_driver() -> None:
    chromium, driver = browser_paths()
    assert chromium and driver
