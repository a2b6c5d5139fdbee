"""Before the first level: does the target serve the model, and will it answer us at all?

``GET {url}/models`` lists the models a target serves; a model it lists is taken as served
without a request. Otherwise (no list, an empty one, or one without the model: some servers,
llama.cpp's and the simulator among them, answer for any model name) one real request of the
workload decides: answered, the run goes on; refused with a client error, or not connected, it
is refused before a level sends thousands of requests that fail alike.
"""

from __future__ import annotations

import aiohttp

from switchgear.capacity.bench.client import (
    CONNECTION,
    Endpoint,
    Request,
    error_message,
    send_one,
)
from switchgear.capacity.bench.load import is_refusal

MAX_NAMES = 20


class TargetRefused(Exception):
    """The target cannot be benched as asked (the model is not served, the key is refused, the
    server is not there); the message says which, in the user's words."""


async def listed_models(base_url: str, headers: dict[str, str],
                        timeout_s: float) -> list[str] | None:
    """The model ids ``GET {base_url}/models`` lists; None when it answers no such list."""
    url = base_url.rstrip("/") + "/models"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session, \
                session.get(url, headers=headers) as response:
            if response.status != 200:
                return None
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        return None
    return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]


def _names(models: list[str]) -> str:
    shown = ", ".join(models[:MAX_NAMES])
    return shown + (f" and {len(models) - MAX_NAMES} more" if len(models) > MAX_NAMES else "")


async def check_target(base_url: str, model: str, headers: dict[str, str], endpoint: Endpoint,
                       probe: Request, timeout_s: float) -> str | None:
    """Raise ``TargetRefused`` when the target at ``base_url`` will not serve ``model`` to us;
    else a warning worth printing (None: nothing to say). ``probe`` is the request sent when the
    model list does not settle it."""
    listed = await listed_models(base_url, headers, timeout_s) or None
    if listed is not None and model in listed:
        return None
    outcome = await send_one(endpoint, probe, timeout_s)
    if outcome.error is None:
        if listed is None:
            return None
        return (f"the target at {base_url} does not list model {model!r} (it lists: "
                f"{_names(listed)}), but it answered a test request for it: going on")
    if outcome.error == CONNECTION:
        raise TargetRefused(f"cannot connect to the target at {base_url} "
                            f"({endpoint.host}:{endpoint.port}): is the server running?")
    if not is_refusal(outcome.status):
        return (f"a test request for model {model!r} failed ({outcome.error}): going on, the "
                "levels will show whether it goes on failing")
    answer = f"HTTP {outcome.status}: {error_message(outcome.error_body)}"
    if listed is not None:
        raise TargetRefused(f"the target at {base_url} does not serve model {model!r}; it serves: "
                            f"{_names(listed)} (a test request was answered {answer})")
    raise TargetRefused(f"the target at {base_url} refused a test request for model {model!r}: "
                        f"{answer}")
