"""Where settings come from: flag over environment over [tool.eventmig] over the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventmig.config import DEFAULT_STORE, load_settings
from eventmig.errors import ConfigError


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("EVENTMIG_STORE", "EVENTMIG_CONFIG", "EVENTMIG_UPCASTERS", "EVENTMIG_READ_MODELS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.eventmig]\nstore = "sqlite:///data/file.db"\nupcasters = "svc:registry"\nbatch_size = 77\n')
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    return tmp_path


def test_the_nearest_pyproject_is_found_and_relative_sqlite_paths_follow_it(service: Path):
    settings = load_settings()
    assert settings.config_file == service / "pyproject.toml" and settings.root == service
    assert settings.store == f"sqlite:///{service}/data/file.db"
    assert settings.upcasters == "svc:registry" and settings.batch_size == 77


def test_the_environment_overrides_the_file_and_a_flag_overrides_both(service: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EVENTMIG_STORE", "postgresql+psycopg://env@h/db")
    assert load_settings().store == "postgresql+psycopg://env@h/db"
    assert load_settings(store="sqlite:////flag.db").store == "sqlite:////flag.db"
    assert load_settings(batch_size=5).batch_size == 5


def test_without_any_configuration_the_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("EVENTMIG_STORE", raising=False)
    monkeypatch.delenv("EVENTMIG_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.store == DEFAULT_STORE == "sqlite:///eventmig.db" and settings.config_file is None


def test_an_explicit_config_file_must_exist(service: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(service / "nope.toml")
    monkeypatch.setenv("EVENTMIG_CONFIG", str(service / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
