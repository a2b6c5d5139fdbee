"""The guard checks: what each looks for in a request or an answer.

Every check — built in or a team's own, named by import path in the config — is a callable
``check(text, role, exchange) -> Finding | None``. ``role`` says what ``text`` is: a chat message's
role (``user``, ``system``, ``tool``, ``assistant``), ``prompt`` or ``input`` for completions and
embeddings, ``request`` for the whole prompt, ``output`` for an answer. A check with
``whole = True`` is called once with the whole prompt or answer; otherwise once per piece (each
message, each answer), which is what lets a redacting check rewrite just that piece. A check
that can redact returns the rewritten text in ``Finding.redacted``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema

from switchgear.exchange import Exchange
from switchgear.guards.redact import Span, pii_spans, replace_spans
from switchgear.quality.refusal import is_refusal
from switchgear.sections.guards import combine, load

#: What a redacted blocked term becomes.
TERM = "[REDACTED:term]"


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check objects to, in words a client can act on; ``redacted`` is the text with
    the offending parts replaced (checks that can redact only)."""

    reason: str
    redacted: str | None = None


class Check(Protocol):
    """One check; see the module docstring."""

    name: str
    whole: bool
    can_redact: bool

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        """A finding, or None when ``text`` passes."""


def _words(items: list[str]) -> str:
    return ", ".join(sorted(set(items)))


class Pii:
    """Personal data and secrets: emails, phone numbers, Luhn-valid card numbers, national IDs,
    API keys and bearer tokens (guards/redact.py)."""

    name, whole, can_redact = "pii", False, True

    def spans(self, text: str) -> list[Span]:
        """Where the personal data and secrets are, and their markers."""
        return pii_spans(text)

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        spans = pii_spans(text)
        if not spans:
            return None
        kinds = [marker.removeprefix("[REDACTED:").rstrip("]") for _, _, marker in spans]
        return Finding(f"found {_words(kinds)}", replace_spans(text, spans))


class Patterns:
    """Blocked patterns (regular expressions) or terms (whole words, any case)."""

    can_redact, whole = True, False

    def __init__(self, name: str, patterns: list[str], terms: list[str]) -> None:
        self.name = name
        self.pattern = combine(patterns, terms)

    def spans(self, text: str) -> list[Span]:
        """Where the patterns match."""
        return [(*match.span(), TERM) for match in self.pattern.finditer(text)
                if match.end() > match.start()]

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        spans = self.spans(text)
        if not spans:
            return None
        found = [text[start:end] for start, end, _ in spans]
        return Finding(f"matched {_words(found)}", replace_spans(text, spans))


class Size:
    """The prompt's size in characters and its number of messages."""

    name, whole, can_redact = "size", True, False

    def __init__(self, max_chars: int | None, max_messages: int | None) -> None:
        self.max_chars = max_chars
        self.max_messages = max_messages

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        if self.max_chars is not None and len(text) > self.max_chars:
            return Finding(f"the prompt has {len(text)} characters; the limit is "
                           f"{self.max_chars}")
        messages = exchange.body.get("messages")
        if self.max_messages is not None and isinstance(messages, list) \
                and len(messages) > self.max_messages:
            return Finding(f"the request has {len(messages)} messages; the limit is "
                           f"{self.max_messages}")
        return None


#: Phrasings seen in jailbreaks and prompt injection. A heuristic: it catches the common
#: and the lazy, not a determined attacker; flag rather than block unless false alarms are cheap.
#: Every phrasing opens with one of i d f y p r s < [ # and then one of g i e o r h | # (ig, di,
#: de, do, fo, yo, pr, re, sh, <|, [i, ##): the lookahead lets the search pass other places
#: without trying each phrasing there (twice as fast on ordinary text).
INJECTION = re.compile(
    r"(?=[idfyprs<\[#][gieorh|#])(?:"
    r"ignore (?:all |any )?(?:the )?(?:previous|prior|above|earlier) (?:instructions|prompts?|rules)"
    r"|disregard (?:the |your |all )?(?:system prompt|instructions|rules|guidelines)"
    r"|forget (?:everything|all) (?:you were told|above|previous)"
    r"|you are now (?:DAN|in developer mode|unrestricted|jailbroken)"
    r"|developer mode (?:enabled|on)|do anything now"
    r"|pretend (?:that )?you (?:have no|are free of|aren't bound by) (?:restrictions|rules|limits)"
    r"|(?:reveal|print|show|repeat) (?:me )?(?:your|the) (?:system prompt|hidden instructions)"
    r"|<\|im_start\|>|<\|system\|>|\[INST\]|###\s*system\s*:)",
    re.IGNORECASE)

#: In tool results and system content even plain orders to the model are suspicious (each
#: opens with as, ai, mo, yo or ne: the same kind of lookahead as ``INJECTION``'s).
HIDDEN_ORDERS = re.compile(
    r"(?=[amyn][sioe])(?:\b(?:assistant|AI|model|you) (?:must|should) (?:now |instead )?"
    r"(?:ignore|send|email|reveal|call|execute|transfer|delete)\b|\bnew instructions\s*:)",
    re.IGNORECASE)


class Injection:
    """A prompt-injection heuristic: known jailbreak phrasings anywhere, and orders hidden in
    tool or system content. Honest about what it is: phrases, not understanding."""

    name, whole, can_redact = "injection", False, False

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        match = INJECTION.search(text)
        if match is None and role in ("tool", "system", "function"):
            match = HIDDEN_ORDERS.search(text)
        if match is None:
            return None
        return Finding(f"looks like prompt injection in {role} content: {match.group()!r}")


class JsonSchema:
    """When ``response_format`` asks for JSON (``json_object``) or a JSON schema
    (``json_schema``): the answer must parse, and conform. Sets ``exchange.schema_valid``."""

    name, whole, can_redact = "json_schema", True, False

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        wanted = exchange.body.get("response_format")
        kind = wanted.get("type") if isinstance(wanted, dict) else None
        if kind not in ("json_object", "json_schema"):
            return None
        finding = self._judge(text, wanted if kind == "json_schema" else None)
        exchange.schema_valid = finding is None
        return finding

    @staticmethod
    def _judge(text: str, wanted: dict[str, Any] | None) -> Finding | None:
        try:
            value = json.loads(text)
        except ValueError as error:
            return Finding(f"the answer is not valid JSON ({error})")
        schema = ((wanted or {}).get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            return None
        problem = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
        if problem is None:
            return None
        where = "/".join(str(part) for part in problem.absolute_path) or "the top level"
        return Finding(f"the answer does not match the JSON schema at {where}: {problem.message}")


class Empty:
    """An answer with no text."""

    name, whole, can_redact = "empty", True, False

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        return None if text.strip() else Finding("the answer is empty")


class Truncated:
    """An answer cut off at ``max_tokens`` (finish_reason ``length``)."""

    name, whole, can_redact = "truncated", True, False

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        if exchange.finish_reason != "length":
            return None
        return Finding("the answer was cut off at max_tokens (finish_reason length)")


class Refusal:
    """An answer that refuses (quality/refusal.py's phrase heuristic). Sets
    ``exchange.refused``."""

    name, whole, can_redact = "refusal", True, False

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        exchange.refused = is_refusal(text)
        return Finding("the answer is a refusal") if exchange.refused else None


class Custom:
    """A team's own check: any callable ``(text, role, exchange) -> Finding | None`` named by
    ``module:attribute``; a class there is instantiated without arguments."""

    can_redact = True

    def __init__(self, name: str, path: str, whole: bool) -> None:
        self.name = name
        self.whole = whole
        self.function: Callable[[str, str, Exchange], Finding | None] = load(path)

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        return self.function(text, role, exchange)
