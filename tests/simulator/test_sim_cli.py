"""``switchgear simulate``: its options, and a real server process driven by the sync client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import openai
import pytest
from click.testing import CliRunner
from openai.types.chat import ChatCompletionMessageParam

from switchgear.cli.simulate import simulate

from servers import free_port

LAUNCH = "from switchgear.cli.simulate import simulate; simulate()"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello, simulator"}]


def test_help_lists_the_model_and_fault_options() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for flag in ("--port", "--slots", "--ttft-ms", "--tpot-ms", "--mean-output-tokens",
                 "--context-window", "--seed", "--model", "--api-key", "--error-rate",
                 "--error-status", "--spike-rate", "--spike-ms", "--hang-rate", "--reset-rate",
                 "--disconnect-rate"):
        assert flag in result.output


@pytest.mark.parametrize("arguments", [["--error-rate", "1.5"], ["--error-status", "200"],
                                       ["--slots", "0"]])
def test_out_of_range_options_are_refused(arguments: list[str]) -> None:
    result = CliRunner().invoke(simulate, arguments)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def _wait_for_health(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the simulator exited early"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    pytest.fail("the simulator did not become healthy in 30 seconds")


def _post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def test_the_command_serves_a_simulator_with_faults_and_a_key() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--port", str(port), "--seed", "1", "--ttft-ms", "1",
         "--tpot-ms", "0.1", "--model", "tiny", "--api-key", "sk-sim",
         "--error-rate", "1", "--error-status", "503"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
    )
    try:
        _wait_for_health(url, process)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-sim", max_retries=0, timeout=10)
        with client:
            assert [model.id for model in client.models.list()] == ["tiny"]
            with pytest.raises(openai.InternalServerError) as failed:
                client.chat.completions.create(model="tiny", messages=HELLO)
            assert failed.value.status_code == 503
            assert _post_json(f"{url}/admin/faults", {"error_rate": 0})["error_rate"] == 0
            answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3)
            assert answer.usage is not None and answer.usage.completion_tokens == 3
            stream = client.chat.completions.create(
                model="tiny", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
            assert [chunk.usage for chunk in stream][-1] is not None
        with pytest.raises(urllib.error.HTTPError) as unauthorized:
            _post_json(f"{url}/v1/chat/completions", {"model": "tiny", "messages": HELLO})
        unauthorized.value.close()
        assert unauthorized.value.code == 401
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, stderr.decode()
