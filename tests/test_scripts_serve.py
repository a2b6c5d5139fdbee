"""`scripts/serve`, the README's first command, as a newcomer runs it: from their own directory,
with a config file named relative to it (it used to read the path from the repository root)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_serve_reads_a_relative_config_from_where_it_is_run(tmp_path: Path) -> None:
    (tmp_path / "my.yaml").write_text(yaml.safe_dump({
        "store": {"url": "sqlite:///mine.db"},
        "models": {"from-my-yaml": {"deployments": [{"name": "sim", "backend": "simulated"}]}}}))
    port = free_port()
    server = subprocess.Popen([ROOT / "scripts" / "serve", "--config", "my.yaml", "--port", str(port),
                               "--log-level", "warning"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as answer:
                    models = json.load(answer)
                break
            except OSError:
                assert time.monotonic() < deadline, "scripts/serve did not start"
                time.sleep(0.1)
        assert [m["id"] for m in models["data"]] == ["from-my-yaml"]
        assert (tmp_path / "mine.db").exists()  # the store's relative path, from the same place
    finally:
        server.terminate()
        server.wait(30)
        if server.stderr is not None:
            server.stderr.close()
