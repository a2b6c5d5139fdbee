"""The Guard stage: checks what goes in before anything is routed, and what comes out before the
client sees it. Each check objects with a finding; its action decides: block (400, with the
reason), redact (rewrite and go on) or flag (record only). Every check that ran is recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from switchgear.config import GuardCheckConfig, GuardList, GuardsConfig
from switchgear.errors import InvalidRequest
from switchgear.exchange import Exchange, Operation
from switchgear.guards.checks import (
    Check,
    Custom,
    Empty,
    Finding,
    Injection,
    JsonSchema,
    Patterns,
    Pii,
    Refusal,
    Size,
    Truncated,
)
from switchgear.guards.stream import StreamRedactor
from switchgear.pipeline import Body, Reply, Stage

#: Actions by strength: the strongest one taken is the record's ``guard_action``.
STRENGTH = {"flag": 1, "redact": 2, "block": 3}


class GuardBlocked(InvalidRequest):
    """A guard check refused the request or its answer; the message says which and why."""

    code = "guard_blocked"


def build_check(config: GuardCheckConfig) -> Check:
    """The check a config entry names, ready to run."""
    name = config.label
    match config.check:
        case "pii":
            return Pii()
        case "patterns":
            return Patterns(name, config.patterns, config.terms)
        case "injection":
            return Injection()
        case "size":
            return Size(config.max_chars, config.max_messages)
        case "json_schema":
            return JsonSchema()
        case "empty":
            return Empty()
        case "truncated":
            return Truncated()
        case "refusal":
            return Refusal()
        case _:
            assert config.path is not None
            return Custom(name, config.path, config.whole)


@dataclass(frozen=True, slots=True)
class Guarded:
    """A check with its action and the name it is recorded under."""

    check: Check
    action: str
    name: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The checks one request gets."""

    input: tuple[Guarded, ...]
    output: tuple[Guarded, ...]

    @classmethod
    def of(cls, config: GuardList) -> Plan:
        def build(entries: list[GuardCheckConfig]) -> tuple[Guarded, ...]:
            return tuple(Guarded(build_check(e), e.action, e.label) for e in entries)

        return cls(build(config.input), build(config.output))


class Guard(Stage):
    """Between admission and the cache: input checks, then the rest, then output checks."""

    def __init__(self, config: GuardsConfig) -> None:
        self.default = Plan.of(config)
        self.routes = {alias: Plan.of(checks) for alias, checks in config.routes.items()}
        self.keys = {key: Plan.of(checks) for key, checks in config.keys.items()}

    def plan(self, exchange: Exchange) -> Plan:
        """The key's checks, else the route's, else everyone's."""
        return (self.keys.get(exchange.principal.key_id or "")
                or self.routes.get(exchange.model) or self.default)

    async def __call__(self, exchange: Exchange) -> Reply:
        plan = self.plan(exchange)
        if plan.input:
            check_input(exchange, plan.input)
        reply = await self.next_stage(exchange)
        if not plan.output or exchange.operation is Operation.EMBEDDINGS:
            return reply
        if isinstance(reply, dict):
            return check_answer(exchange, reply, plan.output)
        return check_stream(exchange, reply, plan.output)


def note(exchange: Exchange, guarded: Guarded, stage: str, finding: Finding | None) -> None:
    """Record that a check ran, and what it found."""
    exchange.checks.append({
        "check": guarded.name, "stage": stage, "verdict": "pass" if finding is None else "fail",
        "action": guarded.action, "reason": "" if finding is None else finding.reason})
    if stage == "output":
        exchange.output_passed = finding is None and exchange.output_passed is not False
    if finding is not None and STRENGTH[guarded.action] > STRENGTH.get(
            exchange.guard_action or "", 0):
        exchange.guard_action = guarded.action


def blocked(guarded: Guarded, stage: str, finding: Finding) -> GuardBlocked:
    """The 400 a blocking check's finding becomes."""
    return GuardBlocked(f"Blocked by the {guarded.name} check on the {stage}: {finding.reason}.")


def check_input(exchange: Exchange, checks: Sequence[Guarded]) -> None:
    """Run the input checks; redact message contents in place of the body, or raise
    ``GuardBlocked``."""
    pieces = prompt_pieces(exchange.body)
    for guarded in checks:
        check = guarded.check
        if check.whole:
            finding = check("\n".join(text for _, text, _ in pieces), "request", exchange)
        else:
            finding = None
            for index, (role, text, put) in enumerate(pieces):
                found = check(text, role, exchange)
                if found is None:
                    continue
                finding = finding or found
                if guarded.action == "redact" and found.redacted is not None:
                    put(found.redacted)
                    pieces[index] = (role, found.redacted, put)
        note(exchange, guarded, "input", finding)
        if finding is not None and guarded.action == "block":
            raise blocked(guarded, "input", finding)


Piece = tuple[str, str, Any]


def prompt_pieces(body: dict[str, Any]) -> list[Piece]:
    """The texts of a request — (role, text, how to replace it) — for chat messages (string
    contents and text parts), a completion prompt or embedding inputs. Replacing rewrites the
    body's own lists and dicts, which were parsed for this request alone."""
    pieces: list[Piece] = []

    def at(container: Any, key: Any) -> Any:
        return lambda text: container.__setitem__(key, text)

    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            role, content = str(message.get("role")), message.get("content")
            if isinstance(content, str):
                pieces.append((role, content, at(message, "content")))
            elif isinstance(content, list):
                pieces += [(role, part["text"], at(part, "text")) for part in content
                           if isinstance(part, dict) and isinstance(part.get("text"), str)]
    for field, role in (("prompt", "prompt"), ("input", "input")):
        value = body.get(field)
        if isinstance(value, str):
            pieces.append((role, value, at(body, field)))
        elif isinstance(value, list):
            pieces += [(role, text, at(value, index)) for index, text in enumerate(value)
                       if isinstance(text, str)]
    return pieces


def _text_of(choice: dict[str, Any]) -> str:
    message = choice.get("message") or choice.get("delta")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def _with_text(choice: dict[str, Any], text: str) -> dict[str, Any]:
    """A copy of ``choice`` carrying ``text`` (cached and coalesced answers are shared: never
    rewrite them in place)."""
    for field in ("message", "delta"):
        if isinstance(choice.get(field), dict):
            return {**choice, field: {**choice[field], "content": text}}
    return {**choice, "text": text}


def check_answer(exchange: Exchange, body: Body, checks: Sequence[Guarded]) -> Body:
    """Run the output checks on a whole answer: a redacted copy, or ``GuardBlocked``."""
    choices = body.get("choices") or []
    if choices:
        exchange.finish_reason = choices[0].get("finish_reason") or exchange.finish_reason
    rewritten = list(choices)
    for guarded in checks:
        finding = None
        for index, choice in enumerate(rewritten):
            found = guarded.check(_text_of(choice), "output", exchange)
            if found is None:
                continue
            finding = finding or found
            if guarded.action == "redact" and found.redacted is not None:
                rewritten[index] = _with_text(choice, found.redacted)
        note(exchange, guarded, "output", finding)
        if finding is not None and guarded.action == "block":
            raise blocked(guarded, "answer", finding)
    return body if rewritten == choices else {**body, "choices": rewritten}


async def check_stream(exchange: Exchange, chunks: AsyncIterator[Body],
                       checks: Sequence[Guarded]) -> AsyncIterator[Body]:
    """Redact a stream chunk by chunk (never splitting a match); run the checks that need the
    whole answer at its end: a blocking one ends the stream with an error event."""
    redacting = [g for g in checks if g.action == "redact" and not g.check.whole]
    findings: dict[str, Finding] = {}
    redactors: dict[int, StreamRedactor] = {}
    texts: dict[int, list[str]] = {}

    def redactor(index: int) -> StreamRedactor:
        if index not in redactors:
            redactors[index] = StreamRedactor(
                [g.check for g in redacting], exchange,
                lambda check, reason: _keep_first(findings, check.name, Finding(reason)))
        return redactors[index]

    last: Body = {}
    async for chunk in chunks:
        choices = chunk.get("choices")
        if not choices:
            yield chunk
            continue
        last = chunk
        rewritten = []
        for choice in choices:
            index = choice.get("index", 0)
            text = _text_of(choice)
            texts.setdefault(index, []).append(text)
            if choice.get("finish_reason"):
                exchange.finish_reason = choice["finish_reason"]
            if redacting:
                released = redactor(index).feed(text)
                if choice.get("finish_reason"):
                    released += redactor(index).flush()
                choice = _with_text(choice, released) if released != text else choice
            rewritten.append(choice)
        yield {**chunk, "choices": rewritten}
    for index, held in redactors.items():  # a stream that ended without a finish_reason
        rest = held.flush()
        if rest:
            template: dict[str, Any] = {"index": index, "finish_reason": None,
                        **({"delta": {}} if "delta" in last["choices"][0] else {})}
            yield {**last, "choices": [_with_text(template, rest)]}
    _judge_stream(exchange, checks, texts, findings)


def _keep_first(findings: dict[str, Finding], name: str, finding: Finding) -> None:
    findings.setdefault(name, finding)


def _judge_stream(exchange: Exchange, checks: Sequence[Guarded], texts: dict[int, list[str]],
                  redacted: dict[str, Finding]) -> None:
    """The checks on the whole streamed answer, once it is complete."""
    for guarded in checks:
        if guarded.action == "redact" and not guarded.check.whole:
            note(exchange, guarded, "output", redacted.get(guarded.check.name))
            continue
        finding = next((found for found in (guarded.check("".join(parts), "output", exchange)
                                            for parts in texts.values()) if found), None)
        note(exchange, guarded, "output", finding)
        if finding is not None and guarded.action == "block":
            raise blocked(guarded, "answer", finding)
