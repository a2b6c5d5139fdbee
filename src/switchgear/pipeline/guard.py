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


def redacts_as_it_streams(guarded: Guarded) -> bool:
    """Whether a check redacts a streamed answer chunk by chunk (the others judge it whole, at
    its end)."""
    return guarded.action == "redact" and not guarded.check.whole


@dataclass(frozen=True, slots=True)
class Plan:
    """The checks one request gets; ``redacting``: the output checks that redact a stream as
    it goes, picked out once, when the stage is built."""

    input: tuple[Guarded, ...]
    output: tuple[Guarded, ...]
    redacting: tuple[Check, ...] = ()

    @classmethod
    def of(cls, config: GuardList) -> Plan:
        def build(entries: list[GuardCheckConfig]) -> tuple[Guarded, ...]:
            return tuple(Guarded(build_check(e), e.action, e.label) for e in entries)

        output = build(config.output)
        return cls(build(config.input), output,
                   tuple(g.check for g in output if redacts_as_it_streams(g)))


class Guard(Stage):
    """Between admission and the cache: input checks, then the rest, then output checks."""

    def __init__(self, config: GuardsConfig) -> None:
        self.default = Plan.of(config)
        self.routes = {alias: Plan.of(checks) for alias, checks in config.routes.items()}
        self.keys = {key: Plan.of(checks) for key, checks in config.keys.items()}
        #: Whether any key or route has checks of its own (else everyone gets ``default``).
        self.varied = bool(self.keys or self.routes)

    def plan(self, exchange: Exchange) -> Plan:
        """The key's checks, else the route's, else everyone's."""
        return (self.keys.get(exchange.principal.key_id or "")
                or self.routes.get(exchange.model) or self.default)

    async def __call__(self, exchange: Exchange) -> Reply:
        plan = self.plan(exchange) if self.varied else self.default
        if plan.input:
            check_input(exchange, plan.input)
        reply = await self.next_stage(exchange)
        if not plan.output or exchange.operation is Operation.EMBEDDINGS:
            return reply
        if isinstance(reply, dict):
            return check_answer(exchange, reply, plan.output)
        return check_stream(exchange, reply, plan)


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


#: A text of the request: (role, text, the list or dict holding it, its index or key there).
Piece = tuple[str, str, Any, Any]


def check_input(exchange: Exchange, checks: Sequence[Guarded]) -> None:
    """Run the input checks; redact message contents in place of the body, or raise
    ``GuardBlocked``."""
    pieces = prompt_pieces(exchange.body)
    whole: str | None = None  # the whole prompt, joined once until a redaction changes it
    for guarded in checks:
        check = guarded.check
        if check.whole:
            if whole is None:
                whole = "\n".join([piece[1] for piece in pieces])
            finding = check(whole, "request", exchange)
        elif (finding := check_pieces(exchange, guarded, pieces)) is not None:
            whole = None
        note(exchange, guarded, "input", finding)
        if finding is not None and guarded.action == "block":
            raise blocked(guarded, "input", finding)


def check_pieces(exchange: Exchange, guarded: Guarded, pieces: list[Piece]) -> Finding | None:
    """Run a check on each piece of the prompt, redacting it (in ``pieces`` and in the body)
    when that is the check's action; the first finding."""
    finding = None
    for index, (role, text, container, key) in enumerate(pieces):
        found = guarded.check(text, role, exchange)
        if found is None:
            continue
        finding = finding or found
        if guarded.action == "redact" and found.redacted is not None:
            container[key] = found.redacted
            pieces[index] = (role, found.redacted, container, key)
    return finding


def prompt_pieces(body: dict[str, Any]) -> list[Piece]:
    """The texts of a request for chat messages (string contents and text parts), a completion
    prompt or embedding inputs. Replacing one rewrites the body's own lists and dicts, which
    were parsed for this request alone."""
    pieces: list[Piece] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            role, content = str(message.get("role")), message.get("content")
            if isinstance(content, str):
                pieces.append((role, content, message, "content"))
            elif isinstance(content, list):
                pieces += [(role, part["text"], part, "text") for part in content
                           if isinstance(part, dict) and isinstance(part.get("text"), str)]
    for field, role in (("prompt", "prompt"), ("input", "input")):
        value = body.get(field)
        if isinstance(value, str):
            pieces.append((role, value, body, field))
        elif isinstance(value, list):
            pieces += [(role, text, value, index) for index, text in enumerate(value)
                       if isinstance(text, str)]
    return pieces


def _text_of(choice: dict[str, Any]) -> str:
    message = choice.get("message") or choice.get("delta")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def _with_text(choice: dict[str, Any], text: str) -> dict[str, Any]:
    """A copy of ``choice`` carrying ``text`` (cached and coalesced answers are shared: never
    rewrite them in place)."""
    if isinstance(message := choice.get("message"), dict):
        return {**choice, "message": {**message, "content": text}}
    if isinstance(delta := choice.get("delta"), dict):
        return {**choice, "delta": {**delta, "content": text}}
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


class StreamedAnswer:
    """One choice of a streamed answer: its text so far, and its redactor (None when no check
    redacts as the stream goes)."""

    __slots__ = ("parts", "redactor")

    def __init__(self, redactor: StreamRedactor | None) -> None:
        self.parts: list[str] = []
        self.redactor = redactor

    def take(self, choice: dict[str, Any], finish: object) -> dict[str, Any]:
        """Note ``choice``'s text; the choice carrying what is safe to send of it, redacted
        (everything still held when it is the last, ``finish``)."""
        text = _text_of(choice)
        self.parts.append(text)
        if self.redactor is None:
            return choice
        released = self.redactor.feed(text)
        if finish:
            released += self.redactor.flush()
        return choice if released == text else _with_text(choice, released)


async def check_stream(exchange: Exchange, chunks: AsyncIterator[Body],
                       plan: Plan) -> AsyncIterator[Body]:
    """Redact a stream chunk by chunk (never splitting a match); run the checks that need the
    whole answer at its end: a blocking one ends the stream with an error event."""
    findings: dict[str, Finding] = {}
    answers: dict[int, StreamedAnswer] = {}

    def answer(index: int) -> StreamedAnswer:
        if plan.redacting:
            return answers.setdefault(index, StreamedAnswer(StreamRedactor(
                plan.redacting, exchange,
                lambda check, reason: _keep_first(findings, check.name, Finding(reason)))))
        return answers.setdefault(index, StreamedAnswer(None))

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
            if (finish := choice.get("finish_reason")):
                exchange.finish_reason = finish
            rewritten.append((answers.get(index) or answer(index)).take(choice, finish))
        yield {**chunk, "choices": rewritten}
    for index, streamed in answers.items():  # a stream that ended without a finish_reason
        rest = streamed.redactor.flush() if streamed.redactor is not None else ""
        if rest:
            template: dict[str, Any] = {"index": index, "finish_reason": None,
                        **({"delta": {}} if "delta" in last["choices"][0] else {})}
            yield {**last, "choices": [_with_text(template, rest)]}
    _judge_stream(exchange, plan.output, answers, findings)


def _keep_first(findings: dict[str, Finding], name: str, finding: Finding) -> None:
    findings.setdefault(name, finding)


def _judge_stream(exchange: Exchange, checks: Sequence[Guarded],
                  answers: dict[int, StreamedAnswer], redacted: dict[str, Finding]) -> None:
    """The checks on the whole streamed answer, once it is complete."""
    for guarded in checks:
        if redacts_as_it_streams(guarded):
            note(exchange, guarded, "output", redacted.get(guarded.check.name))
            continue
        finding = next((found for found in (guarded.check("".join(streamed.parts), "output",
                                                          exchange)
                                            for streamed in answers.values()) if found), None)
        note(exchange, guarded, "output", finding)
        if finding is not None and guarded.action == "block":
            raise blocked(guarded, "answer", finding)
