import pytest

from coursekit import config, profiles


def test_every_notebook_defines_every_profile_with_the_same_keys():
    assert profiles.SETTINGS, "no notebook settings yet"
    for notebook, table in profiles.SETTINGS.items():
        assert set(table) == set(config.PROFILES), notebook
        keys = {name: set(values) for name, values in table.items()}
        assert keys["ci"] == keys["cpu"] == keys["full"], f"{notebook}: {keys}"


def test_settings_follow_the_active_profile(monkeypatch):
    notebook = next(iter(profiles.SETTINGS))
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    ci = profiles.settings(notebook)
    assert ci.profile == "ci"
    assert vars(profiles.settings(notebook, "full"))["profile"] == "full"
    for key, value in profiles.SETTINGS[notebook]["ci"].items():
        assert getattr(ci, key) == value


def test_unknown_notebook_is_a_clear_error():
    with pytest.raises(KeyError, match="known"):
        profiles.settings("99_nothing", "ci")
