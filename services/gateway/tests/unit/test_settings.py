"""Gateway settings: secrets never print."""

from __future__ import annotations

import logging

import structlog

from runstream.gateway.settings import GatewaySettings

SECRET = "s3cret-" + "x" * 32
DEV_TOKEN = "dev-token-that-must-not-print"


def test_the_jwt_secret_and_the_dev_token_never_show_in_reprs_dumps_or_logs(caplog, capsys):
    settings = GatewaySettings(jwt_secret=SECRET, dev_token=DEV_TOKEN)
    structlog.get_logger().warning("settings_loaded", settings=settings)
    logging.getLogger("runstream").warning("settings: %s", settings)
    shown = [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump()),
             caplog.text, capsys.readouterr().out]
    for text in shown:
        assert SECRET not in text and DEV_TOKEN not in text
    assert settings.jwt_secret.get_secret_value() == SECRET, "the value is there to be read"


def test_the_secret_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RUNSTREAM_JWT_SECRET", SECRET)
    assert GatewaySettings().jwt_secret.get_secret_value() == SECRET
