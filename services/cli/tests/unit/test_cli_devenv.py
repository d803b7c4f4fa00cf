import stat
from pathlib import Path

import pytest

from runstream.cli.devenv import write_dev_env
from runstream.cli.settings import load_settings, read_env_file


def test_dev_env_holds_the_url_and_token_lines(tmp_path: Path) -> None:
    path = tmp_path / ".runstream" / "dev.env"
    write_dev_env(path, {"RUNSTREAM_URL": "http://127.0.0.1:8000", "RUNSTREAM_TOKEN": "abc.def"})
    lines = path.read_text().splitlines()
    assert "RUNSTREAM_URL=http://127.0.0.1:8000" in lines
    assert "RUNSTREAM_TOKEN=abc.def" in lines
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path) == {
        "RUNSTREAM_URL": "http://127.0.0.1:8000", "RUNSTREAM_TOKEN": "abc.def"
    }


def test_rewriting_dev_env_replaces_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "dev.env"
    write_dev_env(path, {"RUNSTREAM_URL": "a", "RUNSTREAM_TOKEN": "old"})
    write_dev_env(path, {"RUNSTREAM_URL": "b"})
    assert read_env_file(path) == {"RUNSTREAM_URL": "b"}
    assert not (tmp_path / "dev.env.tmp").exists()


def test_a_value_with_a_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_dev_env(tmp_path / "dev.env", {"RUNSTREAM_TOKEN": "a\nRUNSTREAM_URL=evil"})


def test_commands_find_the_stack_through_dev_env_but_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("RUNSTREAM_NATS_URL", "RUNSTREAM_PREFIX", "RUNSTREAM_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RUNSTREAM_PREFIX", "mine")
    write_dev_env(tmp_path / "dev.env", {
        "RUNSTREAM_NATS_URL": "nats://127.0.0.1:14222",
        "RUNSTREAM_PREFIX": "theirs",
        "RUNSTREAM_DATABASE_URL": "postgresql://x@127.0.0.1:1/db",
    })
    settings = load_settings(tmp_path)
    assert settings.nats_url == "nats://127.0.0.1:14222"
    assert settings.prefix == "mine"
    assert settings.database_url == "postgresql://x@127.0.0.1:1/db"
    assert settings.data_dir == tmp_path
