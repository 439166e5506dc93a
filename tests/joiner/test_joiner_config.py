"""The ``[joiner]`` settings: durations, defaults, and errors that name the key."""

from __future__ import annotations

import pytest

from streamrec.errors import ConfigError
from streamrec.joiner import JoinConfig, joiner_config, load_joiner_config


def test_toml_section_with_durations(tmp_path):
    path = tmp_path / "streamrec.toml"
    path.write_text('[joiner]\nwindow = "5m"\nallowed_lateness = "30s"\nnegative_rate = 0.05\n'
                    'positive_actions = ["click"]\nmemory_budget = 10\n')  # fmt: skip
    config = load_joiner_config(str(path))
    assert (config.window_s, config.allowed_lateness_s, config.negative_rate) == (300.0, 30.0, 0.05)
    assert config.positive_actions == ("click",) and config.memory_budget == 10


def test_defaults_without_a_section(tmp_path):
    path = tmp_path / "streamrec.toml"
    path.write_text("[embedding]\n")
    assert load_joiner_config(str(path)) == JoinConfig()
    assert JoinConfig().window_s == 600.0 and JoinConfig().negative_rate == 0.1


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"windw": "5m"}, "joiner.windw"),
        ({"window": "soon"}, "joiner.window"),
        ({"window": 0}, "joiner.window_s"),
        ({"negative_rate": 0.0}, "joiner.negative_rate"),
        ({"positive_actions": ["click", "show"]}, "joiner.positive_actions"),
        ({"positive_actions": []}, "joiner.positive_actions"),
        ({"memory_budget": -1}, "joiner.memory_budget"),
        ({"batch_size": 0}, "joiner.batch_size"),
        ({"window": "5m", "window_s": 300}, "joiner.window"),
    ],
)
def test_bad_settings_name_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        joiner_config(data)
    assert info.value.key == key
