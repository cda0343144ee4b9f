import math

import pytest

from inductor_sm_override import Settings, SettingsError
from inductor_sm_override.core.settings import env_layer, env_switch


def test_defaults_match_contract():
    s = Settings()
    assert (s.min_sms, s.max_choices, s.budget_s, s.verify) == (0, None, None, True)
    assert (s.rtol, s.atol, s.report, s.simulate_sms, s.strict) == (None, None, None, None, False)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().min_sms = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"min_sms": "abc"}, "min_sms"),
        ({"min_sms": -1}, "min_sms"),
        ({"min_sms": True}, "min_sms"),
        ({"max_choices": 1.5}, "max_choices"),
        ({"budget_s": -5}, "budget_s"),
        ({"budget_s": math.inf}, "budget_s"),
        ({"verify": 1}, "verify"),
        ({"rtol": "x"}, "rtol"),
        ({"simulate_sms": 0}, "simulate_sms"),
        ({"search_space": "FAST"}, "search_space"),
        ({"report": ""}, "report"),
    ],
)
def test_bad_kwargs_name_field_value_and_accepted(kwargs, field):
    with pytest.raises(SettingsError) as err:
        Settings.from_kwargs(**kwargs)
    message = str(err.value)
    assert message.startswith(f"{field}=")
    assert repr(next(iter(kwargs.values()))) in message
    assert "expected" in message
    assert isinstance(err.value, ValueError)


def test_unknown_kwarg_is_named():
    with pytest.raises(SettingsError, match="min_sm"):
        Settings.from_kwargs(min_sm=3)


def test_from_kwargs_normalises():
    s = Settings.from_kwargs(search_space="exhaustive", budget_s=2, min_sms=40)
    assert s.search_space == "EXHAUSTIVE" and s.budget_s == 2.0 and isinstance(s.budget_s, float)


def test_merged_inner_wins_per_field():
    outer = Settings.from_kwargs(min_sms=40, max_choices=8)
    inner = outer.merged({"min_sms": 64})
    assert (inner.min_sms, inner.max_choices) == (64, 8)


def test_from_env_parses_every_kind():
    env = {
        "INDUCTOR_SM_OVERRIDE_MIN_SMS": " 40 ",
        "INDUCTOR_SM_OVERRIDE_MAX_CHOICES": "8",
        "INDUCTOR_SM_OVERRIDE_BUDGET_S": "120.5",
        "INDUCTOR_SM_OVERRIDE_VERIFY": "Off",
        "INDUCTOR_SM_OVERRIDE_REPORT": "runs/iso.jsonl",
        "INDUCTOR_SM_OVERRIDE_SIMULATE_SMS": "46",
        "INDUCTOR_SM_OVERRIDE_STRICT": "YES",
    }
    s = Settings.from_env(env)
    assert (s.min_sms, s.max_choices, s.budget_s, s.verify) == (40, 8, 120.5, False)
    assert (s.report, s.simulate_sms, s.strict) == ("runs/iso.jsonl", 46, True)


@pytest.mark.parametrize(
    "name, value",
    [
        ("INDUCTOR_SM_OVERRIDE_MIN_SMS", "abc"),
        ("INDUCTOR_SM_OVERRIDE_BUDGET_S", "-5"),
        ("INDUCTOR_SM_OVERRIDE_MAX_CHOICES", "1.5"),
        ("INDUCTOR_SM_OVERRIDE_VERIFY", "maybe"),
        ("INDUCTOR_SM_OVERRIDE_RTOL", "nan"),
    ],
)
def test_bad_env_value_names_variable_and_raw_value(name, value):
    with pytest.raises(SettingsError) as err:
        env_layer({name: value})
    message = str(err.value)
    assert message.startswith(f"{name}={value!r}") and "expected" in message
    assert "\n" not in message


def test_misspelt_env_variable_is_an_error():
    with pytest.raises(SettingsError, match="INDUCTOR_SM_OVERRIDE_MINSMS"):
        env_layer({"INDUCTOR_SM_OVERRIDE_MINSMS": "40"})


@pytest.mark.parametrize("word, expected", [("1", True), ("TRUE", True), ("on", True),
                                            ("yes", True), ("0", False), ("False", False),
                                            ("OFF", False), ("no", False), ("", None)])
def test_switch_words(word, expected):
    assert env_switch({"INDUCTOR_SM_OVERRIDE": word}) is expected


def test_switch_bad_word():
    with pytest.raises(SettingsError, match="INDUCTOR_SM_OVERRIDE='maybe'"):
        env_switch({"INDUCTOR_SM_OVERRIDE": "maybe"})
