"""Settings: sources, validation that names the bad field, and the generated docs table."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import load_settings
from core.settings_docs import END_MARKER, START_MARKER, replace_table, settings_table

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_default(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.engine_mode == "embedded"
    assert settings.resolved_engine_urls == [f"http://127.0.0.1:{settings.engine_port}"]
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_base_model_path == tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert settings.auth_enabled


def test_env_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "loragate.toml"
    config.write_text('port = 9000\nmax_loras = 2\nlog_format = "text"\n')
    monkeypatch.setenv("LORAGATE_PORT", "9100")
    settings = load_settings(config)
    assert settings.port == 9100  # env wins
    assert settings.max_loras == 2  # from the file
    assert settings.log_format == "text"


def test_engine_urls_accept_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAGATE_ENGINE_MODE", "external")
    monkeypatch.setenv("LORAGATE_ENGINE_URLS", "http://a:8000/v1, http://b:8000/")
    assert load_settings().resolved_engine_urls == ["http://a:8000", "http://b:8000"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"port": 70000}, "port"),
        ({"engine_mode": "sideways"}, "engine_mode"),
        ({"engine_mode": "external"}, "engine_urls"),
        ({"engine_mode": "external", "engine_urls": "ftp://x"}, "engine_urls"),
        ({"max_loras": 8, "max_cpu_loras": 4}, "max_cpu_loras"),
        ({"workers": 4}, "workers"),
        ({"not_a_setting": 1}, "not_a_setting"),
        ({"max_body_bytes": "lots"}, "max_body_bytes"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)  # type: ignore[arg-type]
    assert field in str(caught.value)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_configuration_doc_holds_the_current_table() -> None:
    document = (REPO / "docs" / "configuration.md").read_text()
    assert settings_table() in document, "run `make docs` to regenerate docs/configuration.md"
    assert replace_table(document) == document


def test_replace_table_needs_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        replace_table("no markers here")
    assert settings_table() in replace_table(f"# t\n{START_MARKER}\nold\n{END_MARKER}\n")
