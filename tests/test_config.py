"""Configuration: the example file documents every key, the environment wins over the file, and a bad value is
refused with a message naming the key (and exit code 2 from the command line)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from datetime import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from bot.app import load_settings, settings_class
from bot.cli import main
from bot.config import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets itself may override the file."""
    for name in list(os.environ):
        if name.upper().startswith("CRMBOT_"):
            monkeypatch.delenv(name)


def setting_keys(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from setting_keys(annotation, (*prefix, name))
        else:
            yield (*prefix, name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_setting_is_documented_in_the_example() -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    keys = list(setting_keys(settings_class()))
    assert ("wecom", "agent_id") in keys and ("timezone",) in keys  # the walk sees sections and top-level keys
    missing = []
    for key in keys:
        node: Any = example
        for part in key:
            if not isinstance(node, dict) or part not in node:
                missing.append(".".join(key))
                break
            node = node[part]
    assert missing == [], f"not in config.example.toml: {missing}"


def test_the_example_loads_and_shows_the_defaults() -> None:
    settings = load_settings(EXAMPLE)
    assert settings == load_settings(os.devnull)  # copying the example changes nothing
    assert settings.timezone == "Asia/Shanghai" and settings.database.url.startswith("sqlite://")


def test_the_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        'timezone = "Asia/Shanghai"\n'
        '[wecom]\ncorp_id = "wwfromfile"\nagent_id = 5\n'
        "[rules]\nladder_warn_days = 5\nladder_handover_days = 10\n",
    )
    monkeypatch.setenv("CRMBOT_WECOM__AGENT_ID", "1000099")
    monkeypatch.setenv("CRMBOT_RULES__LADDER_WARN_DAYS", "3")
    monkeypatch.setenv("CRMBOT_DATABASE__URL", "postgres://crm@db:5432/crm")
    monkeypatch.setenv("CRMBOT_TIMEZONE", "Asia/Urumqi")

    settings = load_settings(path)

    assert settings.wecom.agent_id == 1000099
    assert settings.wecom.corp_id == "wwfromfile"  # the rest of the section still comes from the file
    assert (settings.rules.ladder_warn_days, settings.rules.ladder_handover_days) == (3, 10)
    assert settings.database.url == "postgres://crm@db:5432/crm"
    assert settings.timezone == "Asia/Urumqi"


def test_values_in_the_file_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, '[rules]\nquiet_hours_start = "21:30"\n[server]\nport = 9000\n')
    settings = load_settings(path)
    assert settings.rules.quiet_hours_start == time(21, 30) and settings.server.port == 9000


AES_42 = "a" * 42


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[wecom]\nagent_id = "abc"\n', "wecom.agent_id"),
        ('timezone = "Mars/Olympus"\n', "timezone"),
        (f'[wecom]\nencoding_aes_key = "{AES_42}"\n', "wecom.encoding_aes_key"),
        ('[wecom]\ncorpid = "ww123"\n', "wecom.corpid"),
        ('[wechat]\ncorp_id = "ww123"\n', "wechat"),
        ("[server]\nport = 70000\n", "server.port"),
        ('[database]\nurl = "mysql://root@localhost/crm"\n', "database.url"),
        ('[rules]\nquiet_hours_start = "25:00"\n', "rules.quiet_hours_start"),
        ('[rules]\nladder_handover_mode = "fire"\n', "rules.ladder_handover_mode"),
        ('wecom = "ww123"\n', "wecom"),
    ],
)
def test_a_bad_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    message = str(caught.value)
    assert f"{key}:" in message or f"{key}." in message, message
    assert AES_42 not in message  # a bad secret is not echoed into logs


def test_a_bad_value_from_the_environment_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMBOT_WECOM__AGENT_ID", "abc")
    with pytest.raises(ConfigError, match=r"wecom\.agent_id"):
        load_settings(os.devnull)


def test_an_environment_variable_that_is_not_a_section_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMBOT_WECOM", "ww123")  # meant CRMBOT_WECOM__CORP_ID
    with pytest.raises(ConfigError, match="wecom"):
        load_settings(os.devnull)
    result = CliRunner().invoke(main, ["parse", "x", "--config", os.devnull])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output


def test_a_misspelt_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMBOT_WECOM__CORPID", "ww123")
    with pytest.raises(ConfigError, match=r"wecom\.corpid"):
        load_settings(os.devnull)


def test_bad_toml_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[wecom\nagent_id = 1\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nowhere.toml")


@pytest.mark.parametrize(
    "text",
    ["[wecom\n", '[wecom]\nagent_id = "abc"\n', 'timezone = "Mars/Olympus"\n', "[wechat]\nx = 1\n"],
)
def test_the_command_line_exits_2_with_one_line(tmp_path: Path, text: str) -> None:
    result = CliRunner().invoke(main, ["parse", "x", "--config", str(write(tmp_path, text))])

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("错误 error:"), result.stderr


def test_a_grade_ladder_must_warn_before_it_hands_over(tmp_path: Path) -> None:
    path = write(tmp_path, "[rules]\nladder_by_grade = { A = [15, 3] }\n")
    with pytest.raises(ConfigError, match="ladder_by_grade"):
        load_settings(path)


@pytest.mark.parametrize("role", ["web", "worker"])
def test_an_instance_that_shares_the_work_needs_postgres(tmp_path: Path, role: str) -> None:
    config = write(tmp_path, f'[server]\nrole = "{role}"\n[database]\nurl = "sqlite://crm.sqlite3"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f'server.role = "{role}"' in result.stderr and "PostgreSQL" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1
    settings = load_settings(write(tmp_path, f'[server]\nrole = "{role}"\n[database]\nurl = "postgres://db/crm"\n'))
    assert settings.server.role == role
