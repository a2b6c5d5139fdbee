"""The `switchgear` command: thin; it parses arguments, builds a Config and calls the library."""

from __future__ import annotations

import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import click

from switchgear import __version__
from switchgear.cli.bench import bench
from switchgear.cli.changes import changes
from switchgear.cli.options import ADMIN_KEY, ADMIN_URL, READER_KEY, window_option
from switchgear.cli.options import admin_request as _admin
from switchgear.cli.plan import plan
from switchgear.cli.prompts import prompts
from switchgear.cli.scorecard import scorecard
from switchgear.cli.simulate import simulate
from switchgear.config import ConfigError, load_config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="switchgear")
def main() -> None:
    """Switchgear: an OpenAI-compatible AI inference gateway.

    Put it in front of any model server, or run it on its embedded CPU model, and every request
    is authenticated, admitted by limits, budgets and priority, guarded, cached, routed with
    fallbacks, traced, measured, logged and costed. The other commands read what it knows:
    latency percentiles, costs, SLOs and error budgets, quality shifts, routing, the cache,
    config versions and what moved around each change, the audit trail. `bench` load-tests any
    OpenAI-compatible server, `plan` turns its profile into instances, latency, cost and power,
    and `scorecard` scores the whole operation from evidence.
    """


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SWITCHGEAR_CONFIG", show_envvar=True,
              help="YAML config file. Without one: the embedded SmolLM2 model as 'smollm2'.")
@click.option("--host", help="Address to listen on (overrides server.host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (overrides server.port).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_path: Path | None, host: str | None, port: int | None, log_level: str) -> None:
    """Run the gateway: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models,
    /healthz, /readyz and /metrics. `switchgear wait` returns once it is ready.

    SIGTERM or Ctrl+C drains it: /readyz answers 503 at once while it keeps serving for
    server.drain_grace_s (5 s), then it stops accepting, finishes what is in flight (for
    server.shutdown_timeout_s, 30 s, at most), writes every record and exits 0. A second
    signal (Ctrl+C twice) skips the rest of the grace period.

    Exit 2: invalid config. Exit 3: it could not start (e.g. the port is in use)."""
    from switchgear.gateway.listener import CannotListen
    from switchgear.gateway.server import serve as run_server  # heavy imports only when serving

    try:
        config = load_config(config_path)
        overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        if overrides:
            config = config.model_copy(update={"server": config.server.model_copy(update=overrides)})
        run_server(config, log_level)
    except ConfigError as error:
        click.echo(f"switchgear: invalid config: {error}", err=True)
        sys.exit(2)
    except CannotListen as error:
        click.echo(f"switchgear: {error}", err=True)
        sys.exit(3)


@main.command()
@ADMIN_URL
@click.option("--timeout", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds to wait before giving up.")
def wait(url: str, timeout: float) -> None:
    """Wait until the gateway at --url is ready (GET /readyz answers 200), e.g. after
    `switchgear serve &` in a script.

    Exit 0: ready. Exit 1: not ready within --timeout (the last reason is printed)."""
    from switchgear.cli.admin_client import Unreachable, wait_ready
    from switchgear.cli.options import UNREACHABLE

    try:
        problem = wait_ready(url, timeout)
    except Unreachable as error:
        click.echo(f"switchgear: {error}", err=True)
        sys.exit(UNREACHABLE)
    if problem is not None:
        click.echo(f"switchgear: not ready after {timeout:g} s: {problem}", err=True)
        sys.exit(1)
    click.echo(f"the gateway at {url} is ready")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (through the gateway's admin API)."""


@keys.command("create")
@ADMIN_URL
@ADMIN_KEY
@click.option("--tenant", required=True, help="The tenant that owns the key.")
@click.option("--name", required=True, help="What the key is for.")
@click.option("--role", default="client", show_default=True,
              type=click.Choice(["admin", "operator", "approver", "viewer", "client"]))
@click.option("--scope", "scopes", multiple=True, help="A model alias the key may call "
              "(repeat; none: every model).")
@click.option("--feature", help="Default feature tag of the key's requests.")
@click.option("--tier", default="standard", show_default=True,
              type=click.Choice(["interactive", "standard", "batch"]))
@click.option("--expires-in", type=click.FloatRange(min=1), help="Seconds until it expires.")
@click.option("--rpm", type=click.IntRange(min=1),
              help="Its own requests per minute (instead of limits.per_key.rpm).")
@click.option("--tpm", type=click.IntRange(min=1),
              help="Its own tokens per minute (instead of limits.per_key.tpm).")
@click.option("--daily-budget", type=click.FloatRange(min=0),
              help="Its own spend per UTC day (instead of limits.budgets.per_key.daily).")
@click.option("--monthly-budget", type=click.FloatRange(min=0),
              help="Its own spend per UTC month (instead of limits.budgets.per_key.monthly).")
def keys_create(url: str, admin_key: str | None, tenant: str, name: str, role: str,
                scopes: tuple[str, ...], feature: str | None, tier: str,
                expires_in: float | None, rpm: int | None, tpm: int | None,
                daily_budget: float | None, monthly_budget: float | None) -> None:
    """Create a key and print its secret (shown this once only)."""
    body: dict[str, Any] = {"tenant": tenant, "name": name, "role": role,
                            "scopes": list(scopes), "feature": feature, "tier": tier,
                            "expires_in_s": expires_in}
    if rpm or tpm:
        body["limits"] = {"rpm": rpm, "tpm": tpm}
    if daily_budget is not None or monthly_budget is not None:
        body["budget"] = {"daily": daily_budget, "monthly": monthly_budget}
    answer = _admin(url, "POST", "/admin/keys", admin_key, body)
    key = answer["key"]
    click.echo(f"created {key['id']} ({key['prefix']}…) for tenant {key['tenant']}, "
               f"role {key['role']}")
    click.echo(f"secret (shown once, store it now): {answer['secret']}")


@keys.command("list")
@ADMIN_URL
@ADMIN_KEY
@click.option("--tenant", help="Only this tenant's keys.")
def keys_list(url: str, admin_key: str | None, tenant: str | None) -> None:
    """List keys (never their secrets)."""
    path = "/admin/keys" + (f"?tenant={tenant}" if tenant else "")
    for key in _admin(url, "GET", path, admin_key)["data"]:
        state = "revoked" if key["revoked_at"] else "active"
        scopes = ",".join(key["scopes"]) or "*"
        own = "".join(f"{name}={value}  " for section in ("limits", "budget")
                      for name, value in key.get(section, {}).items() if value is not None)
        click.echo(f"{key['id']}  {key['prefix']}…  {key['tenant']}  {key['role']}  {state}  "
                   f"models={scopes}  {own}{key['name']}")


@keys.command("revoke")
@ADMIN_URL
@ADMIN_KEY
@click.argument("key_id")
def keys_revoke(url: str, admin_key: str | None, key_id: str) -> None:
    """Revoke a key at once."""
    _admin(url, "DELETE", f"/admin/keys/{key_id}", admin_key)
    click.echo(f"revoked {key_id}")


@main.command()
@ADMIN_URL
@ADMIN_KEY
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
def routes(url: str, admin_key: str | None, as_json: bool) -> None:
    """Show each deployment's routing state: healthy / ejected / probing, requests in flight,
    EWMA latency, error ratio and share of traffic (from GET /admin/routing)."""
    from switchgear.cli.routes import render_routing

    report = _admin(url, "GET", "/admin/routing", admin_key)
    click.echo(json.dumps(report, indent=2) if as_json else render_routing(report))


@main.command()
@ADMIN_URL
@READER_KEY
@click.option("--format", "output", default="table", show_default=True,
              type=click.Choice(["table", "json"]), help="A table, or the raw JSON report.")
def quality(url: str, admin_key: str | None, output: str) -> None:
    """Show quality signals per route, deployment and served alias: answers, output length,
    refusal, empty, schema-valid, guard-flag and length-cut rates and the finish-reason mix, in
    the recent and the baseline window, and any shift between them (from GET /admin/quality)."""
    from switchgear.cli.quality import render_quality

    report = _admin(url, "GET", "/admin/quality", admin_key)
    click.echo(json.dumps(report, indent=2) if output == "json" else render_quality(report))


@main.group()
def cache() -> None:
    """Look at and purge the response cache (through the gateway's admin API)."""


@cache.command("stats")
@ADMIN_URL
@ADMIN_KEY
def cache_stats(url: str, admin_key: str | None) -> None:
    """Entries, evictions and requests by cache outcome."""
    click.echo(json.dumps(_admin(url, "GET", "/admin/cache", admin_key), indent=2))


@cache.command("purge")
@ADMIN_URL
@ADMIN_KEY
@click.option("--model", help="Only this model alias's entries.")
@click.option("--tenant", help="Only this tenant's entries.")
def cache_purge(url: str, admin_key: str | None, model: str | None, tenant: str | None) -> None:
    """Drop cached answers: of a model, of a tenant, or all of them."""
    query = urllib.parse.urlencode({k: v for k, v in {"model": model, "tenant": tenant}.items()
                                    if v})
    answer = _admin(url, "DELETE", "/admin/cache" + (f"?{query}" if query else ""), admin_key)
    click.echo(f"purged {answer['purged']} entries")


@main.group()
def slo() -> None:
    """SLOs: error budgets, burn-rate alerts and Prometheus rules.

    The SLOs are declared under slo.objectives in the config; the gateway evaluates them from
    the request log.
    """


@slo.command("status")
@ADMIN_URL
@ADMIN_KEY
@click.option("--tenant", help="Only the SLOs scoped to this tenant.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
def slo_status(url: str, admin_key: str | None, tenant: str | None, as_json: bool) -> None:
    """Show each SLO's owner, target, SLI, error budget left, burn rates and alert states
    (from GET /admin/slo)."""
    from switchgear.cli.slo import render_slo

    path = "/admin/slo" + (f"?{urllib.parse.urlencode({'tenant': tenant})}" if tenant else "")
    report = _admin(url, "GET", path, admin_key)
    click.echo(json.dumps(report, indent=2) if as_json else render_slo(report))


@slo.command("rules")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SWITCHGEAR_CONFIG", show_envvar=True, required=True,
              help="YAML config file whose slo.objectives to translate.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write the rules to this file instead of standard output.")
def slo_rules(config_path: Path, output: Path | None) -> None:
    """Write the SLOs as Prometheus recording and alerting rules (YAML, for rule_files; check
    them with `promtool check rules`)."""
    from switchgear.slo.rules import prometheus_rules

    try:
        rules = prometheus_rules(load_config(config_path).slo)
    except ConfigError as error:
        click.echo(f"switchgear: invalid config: {error}", err=True)
        sys.exit(2)
    if output is None:
        click.echo(rules, nl=False)
    else:
        output.write_text(rules)


@main.group()
def latency() -> None:
    """Latency percentiles from the request log (through the gateway's admin API)."""


@latency.command("report")
@ADMIN_URL
@ADMIN_KEY
@click.option("--by", "group_by", multiple=True, show_default=True,
              type=click.Choice(["model", "deployment", "tenant", "feature"]),
              default=("model", "deployment"), help="Group by (repeat for several).")
@click.option("--window", default="24h", show_default=True, callback=window_option,
              help="How far back: a number and s, m, h or d.")
@click.option("--tenant", help="Only this tenant's requests.")
@click.option("--format", "output", default="table", show_default=True,
              type=click.Choice(["table", "json"]), help="A table in milliseconds, or the JSON "
              "of GET /admin/latency (seconds).")
def latency_report(url: str, admin_key: str | None, group_by: tuple[str, ...], window: float,
                   tenant: str | None, output: str) -> None:
    """p50, p95 and p99 of end-to-end latency, time to first token and time per output token
    of the successful requests in the window (nearest-rank percentiles: always an observed
    value)."""
    from switchgear.cli.latency import render_latency

    query = urllib.parse.urlencode({"group_by": ",".join(dict.fromkeys(group_by)),
                                    "window_s": window, **({"tenant": tenant} if tenant else {})})
    report = _admin(url, "GET", f"/admin/latency?{query}", admin_key)
    click.echo(json.dumps(report, indent=2) if output == "json" else render_latency(report))


@main.group()
def cost() -> None:
    """Cost reports and a FinOps FOCUS export (from the gateway's ledger, via its admin API)."""


PERIOD = [
    click.option("--since", help="Start: ISO 8601 date or time (UTC), or epoch seconds. "
                 "Default: 24 hours before --until."),
    click.option("--until", help="End (exclusive), as --since. Default: now."),
    click.option("--tenant", help="Only this tenant (operators and viewers: their own)."),
]


def _period_options(command: Any) -> Any:
    for option in reversed(PERIOD):
        command = option(command)
    return command


@cost.command("report")
@ADMIN_URL
@ADMIN_KEY
@_period_options
@click.option("--by", default="tenant", show_default=True,
              type=click.Choice(["tenant", "feature", "model", "deployment", "day"]),
              help="One line per what.")
@click.option("--chart", "chart_by", default="tenant", show_default=True,
              type=click.Choice(["tenant", "feature", "model", "deployment"]),
              help="The HTML chart's lines: cost over time per what.")
@click.option("--format", "output", default="table", show_default=True,
              type=click.Choice(["table", "json"]))
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML page with a chart of cost over time.")
@click.option("--peak-grain", "grain", default=60, show_default=True,
              type=click.IntRange(1, 86400),
              help="Seconds: a deployment's peak load is its busiest stretch this long.")
def cost_report(url: str, admin_key: str | None, since: str | None, until: str | None,
                tenant: str | None, by: str, chart_by: str, output: str,
                html_path: Path | None, grain: int) -> None:
    """Cost per tenant, feature, model, deployment or day, with unit economics.

    Requests, tokens, cost per request, per 1,000 requests and per million tokens, and cache
    savings; then each deployment's idle cost, utilization and what doubling the traffic would
    add."""
    from switchgear.cli.cost import render_html, render_table

    query = {k: v for k, v in {"since": since, "until": until, "tenant": tenant, "by": by,
                               "chart": chart_by, "grain": str(grain)}.items() if v}
    report = _admin(url, "GET", "/admin/cost?" + urllib.parse.urlencode(query), admin_key)
    click.echo(json.dumps(report, indent=2) if output == "json" else render_table(report))
    if html_path is not None:
        html_path.write_text(render_html(report))
        click.echo(f"wrote {html_path}", err=True)


@cost.command("export")
@ADMIN_URL
@ADMIN_KEY
@_period_options
@click.option("--focus", "focus_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write the ledger here as a FinOps FOCUS CSV (one row per day, tenant, "
              "feature, deployment and meter).")
def cost_export(url: str, admin_key: str | None, since: str | None, until: str | None,
                tenant: str | None, focus_path: Path) -> None:
    """Export the ledger as a FinOps FOCUS dataset."""
    query = {k: v for k, v in {"since": since, "until": until, "tenant": tenant}.items() if v}
    path = "/admin/cost/focus" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data: bytes = _admin(url, "GET", path, admin_key, raw=True)
    focus_path.write_bytes(data)
    rows = data.count(b"\n") - 1
    click.echo(f"wrote {focus_path}: {rows} rows")


@main.group()
def audit() -> None:
    """The tamper-evident audit trail of admin actions: key creation and revocation, admin
    access, failed logins, config changes. Each entry holds the previous one's hash (an HMAC
    keyed with the audit key, governance.audit_secret_env)."""


def _anchor(context: click.Context, parameter: click.Parameter,
            value: str | None) -> tuple[int, str] | None:
    from switchgear.governance.verify import parse_anchor

    if value is None:
        return None
    try:
        return parse_anchor(value)
    except ValueError:
        raise click.BadParameter("SEQ:HASH as an intact check printed it") from None


@audit.command("verify")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SWITCHGEAR_CONFIG", show_envvar=True,
              help="YAML config file naming the store (store.url) and the audit key's variable. "
              "Without one: the default store, sqlite:///switchgear.db.")
@click.option("--anchor", callback=_anchor, metavar="SEQ:HASH",
              help="An anchor an earlier intact check printed: also catches deleted newest "
              "entries and a rewritten trail.")
def audit_verify(config_path: Path | None, anchor: tuple[int, str] | None) -> None:
    """Check the audit trail's hash chain, reading the store directly (the gateway may be down;
    the audit key is chosen as the gateway chooses it: the variable governance.audit_secret_env
    names, else the key file beside the SQLite file; the output says which).

    Exit 0: intact, with its length. Exit 1: names the first entry altered, removed or
    reordered. Exit 2: could not check (config, key or store). Exit 3: the key is not the one
    the trail was sealed with (both key ids shown), so nothing was checked."""
    from switchgear.cli.audit import UNCHECKED, check_trail, describe
    from switchgear.store.base import StoreUnavailable

    try:
        check = check_trail(load_config(config_path), anchor)
    except (ConfigError, StoreUnavailable) as error:
        click.echo(f"switchgear: cannot check the audit trail: {error}", err=True)
        sys.exit(UNCHECKED)
    click.echo(describe(check))
    sys.exit(check.exit_code)


@audit.command("list")
@ADMIN_URL
@ADMIN_KEY
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many entries, newest first.")
@click.option("--before", type=click.IntRange(min=1), help="Only entries before this sequence "
              "number (to page back).")
@click.option("--action", help="Only this action (e.g. key.create, admin.auth_failed).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
def audit_list(url: str, admin_key: str | None, limit: int, before: int | None,
               action: str | None, as_json: bool) -> None:
    """List the newest audit entries: who (key id, role, tenant), when, from where (client
    address) and what (action, target, details). Admins only (GET /admin/audit)."""
    from switchgear.cli.audit import render_audit

    query = {k: v for k, v in {"limit": limit, "before": before, "action": action}.items()
             if v is not None}
    report = _admin(url, "GET", "/admin/audit?" + urllib.parse.urlencode(query), admin_key)
    click.echo(json.dumps(report, indent=2) if as_json else render_audit(report))


@main.group("config")
def config_group() -> None:
    """Versioned config: show, diff, propose, review, apply and roll back changes.

    The YAML file seeds version 1; after that every change is a change request, applied to
    every running replica within seconds. Sections listed in governance.approval_required need
    approval by someone other than the change's author.
    """


@config_group.command("show")
@ADMIN_URL
@ADMIN_KEY
@click.option("--version", "number", type=click.IntRange(min=1),
              help="This version (default: the newest applied).")
def config_show(url: str, admin_key: str | None, number: int | None) -> None:
    """Print an applied config version as YAML."""
    answer = _admin(url, "GET", "/admin/config" + (f"?version={number}" if number else ""),
                    admin_key)
    glass = ", BREAK-GLASS" if answer["break_glass"] else ""
    click.echo(f"# version {answer['version']}, applied by {answer['applied_by']}{glass}; "
               f"this replica serves version {answer['serving']}")
    click.echo(answer["config"], nl=False)


@config_group.command("diff")
@ADMIN_URL
@ADMIN_KEY
@click.argument("start", required=False, type=click.IntRange(min=1))
@click.argument("end", required=False, type=click.IntRange(min=1))
@click.option("--change", "change_id", help="Show this change request's diff instead.")
def config_diff(url: str, admin_key: str | None, start: int | None, end: int | None,
                change_id: str | None) -> None:
    """Diff two versions (default: the newest against the one before), or a change."""
    if change_id:
        click.echo(_admin(url, "GET", f"/admin/config/changes/{change_id}", admin_key)["diff"],
                   nl=False)
        return
    query = urllib.parse.urlencode({k: v for k, v in {"from": start, "to": end}.items() if v})
    answer = _admin(url, "GET", "/admin/config/diff" + (f"?{query}" if query else ""),
                    admin_key)
    click.echo(answer["diff"] or f"versions {answer['from']} and {answer['to']} are the same",
               nl=not answer["diff"])


BREAK_GLASS = click.option("--break-glass", is_flag=True,
                           help="Emergency: apply at once without approval (logged loudly; "
                           "the change must be reviewed afterwards).")
MESSAGE = click.option("--message", "-m", default="", help="Why: shown to the reviewer.")


@config_group.command("propose")
@ADMIN_URL
@ADMIN_KEY
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--patch", is_flag=True, help="PATH holds only the top-level sections to "
              "replace (e.g. just models:), not a whole config.")
@MESSAGE
@BREAK_GLASS
def config_propose(url: str, admin_key: str | None, path: Path, patch: bool, message: str,
                   break_glass: bool) -> None:
    """Propose the config in PATH (YAML) as a change; prints its id and diff."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        click.echo(f"switchgear: {path}: not valid YAML: {error}", err=True)
        sys.exit(2)
    body = {"sections" if patch else "config": data, "message": message,
            "break_glass": break_glass}
    _print_change(_admin(url, "POST", "/admin/config/changes", admin_key, body), diff=True)


@config_group.command("review")
@ADMIN_URL
@ADMIN_KEY
@click.argument("change_id")
@click.option("--approve/--reject", required=True, help="The decision.")
@click.option("--comment", "-c", default="", help="Why.")
def config_review(url: str, admin_key: str | None, change_id: str, approve: bool,
                  comment: str) -> None:
    """Approve or reject a change (never your own), or review one applied by break-glass."""
    body = {"approve": approve, "comment": comment}
    _print_change(_admin(url, "POST", f"/admin/config/changes/{change_id}/review", admin_key,
                         body))


@config_group.command("apply")
@ADMIN_URL
@ADMIN_KEY
@click.argument("change_id")
@BREAK_GLASS
def config_apply(url: str, admin_key: str | None, change_id: str, break_glass: bool) -> None:
    """Apply a change: it becomes the next version, served by every replica within seconds."""
    _print_change(_admin(url, "POST", f"/admin/config/changes/{change_id}/apply", admin_key,
                         {"break_glass": break_glass}))


@config_group.command("rollback")
@ADMIN_URL
@ADMIN_KEY
@click.argument("version", type=click.IntRange(min=1))
@MESSAGE
@BREAK_GLASS
def config_rollback(url: str, admin_key: str | None, version: int, message: str,
                    break_glass: bool) -> None:
    """Propose going back to VERSION (a change like any other: reviewed, then applied)."""
    body = {"version": version, "message": message, "break_glass": break_glass}
    _print_change(_admin(url, "POST", "/admin/config/rollback", admin_key, body), diff=True)


@config_group.command("history")
@ADMIN_URL
@ADMIN_KEY
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
def config_history(url: str, admin_key: str | None, as_json: bool) -> None:
    """The applied versions and the change requests, newest first."""
    from datetime import UTC, datetime

    report = _admin(url, "GET", "/admin/config/history", admin_key)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return

    def when(seconds: float | None) -> str:
        return datetime.fromtimestamp(seconds or 0, UTC).strftime("%Y-%m-%d %H:%M:%S")

    click.echo(f"serving version {report['serving']}")
    for version in report["versions"]:
        glass = "  BREAK-GLASS" if version["break_glass"] else ""
        click.echo(f"v{version['version']}  {when(version['applied_at'])}  "
                   f"{version['applied_by']}  {version['change_id'] or '(config file)'}{glass}")
    for change in report["changes"]:
        click.echo(_change_line(change))


def _change_line(change: dict[str, Any]) -> str:
    state = "REVIEW REQUIRED" if change["review_required"] else change["status"]
    version = f" -> v{change['applied_version']}" if change["applied_version"] else ""
    approval = "needs approval" if change["needs_approval"] else "no approval needed"
    return (f"{change['change_id']}  {state}{version}  by {change['author']}  "
            f"[{','.join(change['sections'])}] ({approval})  {change['message']}")


def _print_change(change: dict[str, Any], diff: bool = False) -> None:
    click.echo(_change_line(change))
    if change["review_required"]:
        click.echo("BREAK-GLASS: applied without approval; another person must review it: "
                   f"switchgear config review {change['change_id']} --approve/--reject", err=True)
    if diff:
        click.echo(change["diff"], nl=False)


main.add_command(simulate)
main.add_command(prompts)
main.add_command(changes)
main.add_command(scorecard)
main.add_command(bench)
main.add_command(plan)
