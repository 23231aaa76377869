"""Settings come from the environment and an optional file, checked once at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.errors import ConfigurationError
from hub.settings import Settings


def test_embedded_default_needs_nothing(tmp_path: Path) -> None:
    settings = Settings.from_env({"HOME": str(tmp_path)})
    assert settings.database_url is None
    assert settings.data_dir == tmp_path / ".local" / "share" / "tongban"
    assert settings.sqlite_path.name == "events.sqlite3"
    assert settings.origin == "tongban/43"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "tongban.toml"
    config.write_text('node_region = "42"\ndatabase_url = "postgresql://a@h/db"\n')
    settings = Settings.from_env(
        {"TONGBAN_CONFIG": str(config), "TONGBAN_NODE_REGION": "61", "HOME": str(tmp_path)}
    )
    assert settings.node_region == "61"
    assert settings.database_url == "postgresql://a@h/db"
    assert settings.origin == "tongban/61"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TONGBAN_NODE_REGION": "4x"}, "TONGBAN_NODE_REGION"),
        ({"TONGBAN_DATABASE_URL": "mysql://x"}, "postgresql://"),
        ({"TONGBAN_DATABASE_URL": "host=x port"}, "malformed"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({"HOME": "/tmp", **environ})


def test_unknown_file_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "tongban.toml"
    config.write_text('colour = "red"\n')
    with pytest.raises(ConfigurationError, match="unknown keys colour"):
        Settings.from_env({"TONGBAN_CONFIG": str(config)})


def test_password_is_not_in_repr(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cipher_keys="k1:secret")
    assert "secret" not in repr(settings)
