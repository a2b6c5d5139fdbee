"""What commands share: for those that call a running gateway's admin API its URL, the key, and
the call itself (a refusal is printed and exits 1; no gateway at the URL exits 2); for any, a
duration option's parsing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from switchgear.sections.durations import parse_duration

ADMIN_URL = click.option("--url", default="http://127.0.0.1:8080", show_default=True,
                         envvar="SWITCHGEAR_URL", show_envvar=True,
                         help="The running gateway's base URL.")
ADMIN_KEY = click.option("--admin-key", envvar="SWITCHGEAR_ADMIN_KEY", show_envvar=True,
                         help="An admin key (or, for list, any reader's key).")
READER_KEY = click.option("--admin-key", envvar="SWITCHGEAR_ADMIN_KEY", show_envvar=True,
                          help="A reader's key: viewer, operator or admin.")

#: Exit codes of commands that call a gateway: it refused the call; no gateway answered.
#: Exit codes: the gateway refused; what was sent was invalid (its 400, as `serve` exits on an
#: invalid config) or no gateway answered at --url.
REFUSED, INVALID, UNREACHABLE = 1, 2, 2

AS_JSON = click.option("--json", "as_json", is_flag=True,
                       help="Print the raw JSON instead of a table.")


def window_option(context: click.Context, parameter: click.Parameter, value: str) -> float:
    """A duration option (30d, 12h, 90m, 500ms, or seconds) as seconds; a usage error otherwise."""
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def echo_report(report: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print an admin API answer: as indented JSON, or laid out by ``render``."""
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


def admin_request(url: str, method: str, path: str, token: str | None, body: Any = None,
                  raw: bool = False) -> Any:
    """Call the admin API: the parsed JSON answer (or its bytes when ``raw``); on an error,
    say it on stderr and exit REFUSED, INVALID for a 400, or UNREACHABLE when no gateway
    answered."""
    from switchgear.cli.admin_client import AdminError, Unreachable, admin_call, admin_fetch

    try:
        if raw:
            return admin_fetch(url, method, path, token, body)
        return admin_call(url, method, path, token, body)
    except AdminError as error:
        click.echo(f"switchgear: {error}", err=True)
        sys.exit(UNREACHABLE if isinstance(error, Unreachable)
                 else INVALID if error.status == 400 else REFUSED)
