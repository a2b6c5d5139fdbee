"""Prompt templates: placeholders, safe rendering, and version numbers counted at apply time."""

from __future__ import annotations

import pytest

from switchgear.config import ConfigError, parse_config
from switchgear.errors import InvalidRequest
from switchgear.prompts.versions import changed_templates, template_versions, templates_of
from switchgear.sections.prompts import PromptTemplate


def template(*contents: str) -> PromptTemplate:
    return PromptTemplate.model_validate(
        {"messages": [{"role": "system", "content": text} for text in contents]})


def test_rendering_fills_each_placeholder_once_and_never_reads_values_as_templates() -> None:
    support = template("You help with {{product}}.", "Tone: {{ tone }}. {{product}} again.")
    assert support.variables == ("product", "tone")
    rendered = support.render({"product": "{{tone}} {0.__class__} %s $x", "tone": "calm"})
    assert rendered == [
        {"role": "system", "content": "You help with {{tone}} {0.__class__} %s $x."},
        {"role": "system", "content": "Tone: calm. {{tone}} {0.__class__} %s $x again."}]


@pytest.mark.parametrize(("variables", "param", "text"), [
    ({"product": "X"}, "prompt.variables.tone", "Missing prompt variable 'tone'"),
    ({"product": "X", "tone": "t", "colour": "red"}, "prompt.variables.colour",
     "Unknown prompt variable 'colour'"),
])
def test_a_missing_or_unknown_variable_is_refused_by_name(variables: dict[str, str], param: str,
                                                          text: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        template("{{product}} {{tone}}").render(variables)
    assert error.value.param == param and text in error.value.message


@pytest.mark.parametrize("content", ["{{1x}}", "{{a b}}", "{{ }}", "{{open"])
def test_a_malformed_placeholder_is_a_config_error(content: str) -> None:
    with pytest.raises(ConfigError, match="must open a placeholder"):
        parse_config({"prompts": {"t": {"messages": [{"role": "system", "content": content}]}}})


def test_template_names_are_short_identifiers() -> None:
    with pytest.raises(ConfigError, match="prompt name"):
        parse_config({"prompts": {"a b": {"messages": [{"role": "user", "content": "x"}]}}})


def test_a_version_goes_up_only_for_templates_a_change_alters() -> None:
    one, two = {"a": template("a"), "b": template("b")}, {"a": template("a"), "b": template("B")}
    first = template_versions({}, {}, one)
    assert first == {"a": 1, "b": 1}
    second = template_versions(one, first, two)
    assert second == {"a": 1, "b": 2}
    assert changed_templates(one, two, second) == {"b": 2}
    # going back to the old text is still a change: numbers never go back
    assert template_versions(two, second, one) == {"a": 1, "b": 3}
    # removed, then added again: it continues after its last number
    removed = template_versions(two, second, {"a": template("a")})
    assert removed == {"a": 1, "b": 2}
    assert changed_templates(two, {"a": template("a")}, removed) == {"b": None}
    assert template_versions({"a": template("a")}, removed, two)["b"] == 3


def test_templates_are_read_back_from_a_versions_yaml() -> None:
    text = "prompts:\n  s:\n    messages:\n    - role: system\n      content: Hi {{name}}\n"
    assert templates_of(text) == {"s": template("Hi {{name}}")}
    assert templates_of("models: {}\n") == {}
