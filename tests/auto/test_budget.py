"""Budget: sizes, durations and rates parsed; one-line errors naming the field."""

import pytest

from netshrink.autocompress import Budget, parse_duration, parse_size
from netshrink.core.errors import ConfigError


@pytest.mark.parametrize(("text", "expected"), [("20KB", 20_000), ("1.5MB", 1_500_000), ("20KiB", 20_480),
                                                ("300B", 300), ("12345", 12_345), (4096, 4096), ("2 mb", 2_000_000)])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("90s", 90), ("60m", 3600), ("2h", 7200), ("1h30m", 5400),
                                                ("45", 45), (1.5, 1.5), ("0.5s", 0.5)])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "5x", "1h30", "-3m", "0s", "m"])
def test_bad_durations_are_one_line(text):
    with pytest.raises(ConfigError, match="duration|positive") as error:
        parse_duration(text, "time_limit")
    assert "\n" not in str(error.value)


def test_a_rate_is_against_the_original():
    budget = Budget(max_bytes="45X", time_limit="1h")
    assert budget.max_bytes == "45x" and budget.kind == "bytes" and budget.time_limit == 3600
    assert budget.limit(90_000) == 2_000
    assert Budget(max_latency_ms="2.5x").limit(1.0) == pytest.approx(0.4)
    assert Budget(max_macs=1_000_000).limit(5e9) == 1_000_000  # absolute: the original does not matter
    assert Budget(max_bytes="20KB").max_bytes == 20_000


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "exactly one of max_bytes"),
    ({"max_bytes": 10, "max_macs": 10}, "got max_bytes, max_macs"),
    ({"max_bytes": "ten"}, "max_bytes 'ten' is not a size"),
    ({"max_bytes": "0.5x"}, "at least 1x"),
    ({"max_latency_ms": -1.0}, "max_latency_ms must be a positive"),
    ({"max_latency_ms": "fast"}, "not a latency"),
    ({"max_bytes": 100, "max_drop": -0.5}, "max_drop is in accuracy points"),
    ({"max_bytes": 100, "time_limit": "soon"}, "time_limit 'soon' is not a duration"),
    ({"max_latency_ms": "2x", "runtime": "tflite"}, "runtime 'tflite' is not one of torch, onnxruntime"),
    ({"max_bytes": "10x", "runtime": "onnxruntime"}, "it applies to max_latency_ms, not max_bytes"),
])
def test_bad_budgets_are_one_line(fields, message):
    with pytest.raises(ConfigError, match=message) as error:
        Budget(**fields)
    assert "\n" not in str(error.value)


def test_budget_and_auto_are_exported_and_the_package_has_its_own_name():
    import inspect

    import netshrink
    import netshrink.autocompress

    assert netshrink.Budget is Budget
    assert inspect.isfunction(netshrink.auto)  # the spelling: netshrink.auto(model, data, Budget(...))
    assert netshrink.auto is netshrink.autocompress.auto
