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
        (
            {"TONGBAN_MAX_MATERIAL_BYTES": "209715201"},
            "TONGBAN_MAX_MATERIAL_BYTES=209715201: at most",
        ),
        ({"TONGBAN_MAX_MATERIAL_BYTES": "0"}, "TONGBAN_MAX_MATERIAL_BYTES must be positive"),
        ({"TONGBAN_MAX_MATERIAL_BYTES": "1MB"}, "TONGBAN_MAX_MATERIAL_BYTES='1MB'"),
        ({"TONGBAN_PROCESSES": "-1"}, "TONGBAN_PROCESSES='-1': expected a whole number"),
        ({"TONGBAN_LOG_FORMAT": "xml"}, "TONGBAN_LOG_FORMAT='xml': json or text"),
        ({"TONGBAN_LOG_LEVEL": "LOUD"}, "TONGBAN_LOG_LEVEL='LOUD': DEBUG, INFO, WARNING or ERROR"),
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


def test_a_configuration_file_that_is_absent_or_not_toml_is_named(tmp_path: Path) -> None:
    config = tmp_path / "tongban.toml"
    with pytest.raises(ConfigurationError, match=f"TONGBAN_CONFIG={config}: "):
        Settings.from_env({"TONGBAN_CONFIG": str(config)})
    config.write_text("node_region = \n")
    with pytest.raises(ConfigurationError, match=f"TONGBAN_CONFIG={config}: Invalid value"):
        Settings.from_env({"TONGBAN_CONFIG": str(config)})


def test_settings_made_in_code_are_checked_the_same_way(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"TONGBAN_PROCESSES must be 0 \(one per CPU\)"):
        Settings(data_dir=tmp_path, processes=-1)


def test_password_is_not_in_repr(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cipher_keys="k1:secret")
    assert "secret" not in repr(settings)


def test_an_unknown_tongban_variable_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown setting TONGBAN_DATABSE_URL"):
        Settings.from_env({"HOME": str(tmp_path), "TONGBAN_DATABSE_URL": "postgresql://x"})
    # The hall-side adapters' and the test harness's families are not the node's business.
    Settings.from_env(
        {
            "HOME": str(tmp_path),
            "TONGBAN_ADAPTER_TARGET": "x:1",
            "TONGBAN_GATEWAY_LISTEN": "x:2",
            "TONGBAN_VILLAGE_DB": "x",
            "TONGBAN_IMPORT_KEY_PREFIX": "x",
            "TONGBAN_TEST_KAFKA": "x:3",
        }
    )


def test_the_example_configuration_file_loads(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "tongban.example.toml"
    settings = Settings.from_env({"HOME": str(tmp_path), "TONGBAN_CONFIG": str(example)})
    assert settings.database_url == "postgresql://tongban@db.hunan.example:5432/tongban"
    assert settings.origin == "tongban/43"
    assert settings.metrics_listen == "0.0.0.0:9464"
    assert settings.group_commit is True
    # Every setting the node has is in the example, so the example documents them all.
    from hub.settings import _KEYS

    text = example.read_text()
    missing = [name for name in _KEYS if f"\n{name} = " not in text and f"# {name} = " not in text]
    assert missing == []


def test_material_limit_and_federation_file(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "HOME": str(tmp_path),
            "TONGBAN_MAX_MATERIAL_BYTES": "52428800",
            "TONGBAN_FEDERATION": "/etc/tongban/federation.toml",
        }
    )
    assert settings.max_material_bytes == 52428800
    assert settings.federation == Path("/etc/tongban/federation.toml")
    default = Settings.from_env({"HOME": str(tmp_path)})
    assert (default.max_material_bytes, default.federation) == (200 * 1024 * 1024, None)


def test_the_default_data_directory_follows_xdg_data_home() -> None:
    assert Settings.from_env({"HOME": "/home/clerk"}).data_dir == Path(
        "/home/clerk/.local/share/tongban"
    )
    assert Settings.from_env(
        {"HOME": "/home/clerk", "XDG_DATA_HOME": "/srv/data"}
    ).data_dir == Path("/srv/data/tongban")
