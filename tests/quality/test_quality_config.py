"""The quality section of the config: defaults that run anywhere, bad values refused by name."""

from __future__ import annotations

import pytest

from switchgear.config import ConfigError, parse_config


def test_an_empty_config_has_the_detector_on_with_defaults() -> None:
    quality = parse_config({}).quality
    assert quality.enabled and quality.canary_rollback
    assert quality.recent_s < quality.baseline_s
    assert 0 < quality.margins.refusal_rate < 1


@pytest.mark.parametrize(("quality", "named"), [
    ({"margins": {"refusal_rate": 0}}, "quality.margins.refusal_rate"),
    ({"margins": {"politeness": 0.1}}, "quality.margins.politeness"),
    ({"confidence": 1}, "quality.confidence"),
    ({"min_samples": 1}, "quality.min_samples"),
    ({"bucket_s": 60, "recent_s": 30}, "bucket_s must not be longer"),
])
def test_bad_quality_settings_are_refused_naming_the_field(quality: dict[str, object],
                                                           named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"quality": quality})
    assert named in str(refused.value)
