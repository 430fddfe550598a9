"""Configuration from PANEL_* variables; bad values fail at start naming the variable."""
import re

import pytest

from panel import create_app
from panel.config import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("PANEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PANEL_INSTANCE_PATH", str(tmp_path))


def test_missing_secret_key_names_the_variable():
    with pytest.raises(ConfigError, match="PANEL_SECRET_KEY is not set"):
        create_app({"PLUGINS": []})


@pytest.mark.parametrize("var, value, message", [
    ("PANEL_SECRET_KEY", "short", "PANEL_SECRET_KEY is too short"),
    ("PANEL_DATABASE_URL", "oracle://x", "PANEL_DATABASE_URL is not a supported database URL"),
    ("PANEL_REDIS_URL", "http://x", "PANEL_REDIS_URL must start with redis://"),
    ("PANEL_PUBLIC_URL", "example.com", "PANEL_PUBLIC_URL must be an absolute http(s) URL"),
    ("PANEL_JOB_RETRIES", "many", "PANEL_JOB_RETRIES must be a non-negative integer"),
    ("PANEL_JOB_BACKOFF", "5,x", "PANEL_JOB_BACKOFF must be a comma-separated list"),
    ("PANEL_ENCRYPTION_KEY", "not-a-fernet-key", "PANEL_ENCRYPTION_KEY is not a valid Fernet key"),
])
def test_invalid_values_name_the_variable(monkeypatch, var, value, message):
    monkeypatch.setenv("PANEL_SECRET_KEY", "a-long-enough-secret-key")
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app({"PLUGINS": []})


def test_env_config_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("PANEL_SECRET_KEY", "a-long-enough-secret-key")
    monkeypatch.setenv("PANEL_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    monkeypatch.setenv("PANEL_PUBLIC_URL", "https://panel.example.com/")
    monkeypatch.setenv("PANEL_JOB_BACKOFF", "1,2,3")
    app = create_app({"PLUGINS": []})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/x.db"
    assert app.config["PUBLIC_URL"] == "https://panel.example.com"
    assert app.config["JOB_BACKOFF"] == [1, 2, 3]
    assert app.config["REDIS_URL"] is None


def test_default_database_is_sqlite_in_the_instance_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("PANEL_SECRET_KEY", "a-long-enough-secret-key")
    app = create_app({"PLUGINS": []})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/panel.db"


def test_plugin_setting_env_override_wins(monkeypatch, tmp_path):
    from corelib import BASE_CONFIG
    from memory_backend import MemoryPlugin

    from panel.extensions import db
    from panel.plugins import raw_settings, set_setting, settings_for

    monkeypatch.setenv("PANEL_PLUGIN_MEMORY_REGION", "eu-2")
    app = create_app(BASE_CONFIG | {"DATABASE_URL": f"sqlite:///{tmp_path}/p.db", "PLUGINS": [],
                                    "EXTRA_PLUGINS": [MemoryPlugin()]})
    with app.app_context():
        db.create_all()
        set_setting("memory", "region", "us-1")
        values, source = raw_settings("memory")
        assert values["region"] == "eu-2" and source["region"] == "env"
        assert settings_for("memory")["region"] == "eu-2"
