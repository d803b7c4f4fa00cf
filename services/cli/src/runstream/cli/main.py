"""The `runstream` command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from runstream.cli.durations import parse_duration
from runstream.cli.settings import CliSettings, child_env, load_settings
from runstream.cli.tokens import make_token, resolve_secret

app = typer.Typer(
    help="Runstream: run the stack, inspect the stream, operate on failures.",
    no_args_is_help=True,
    add_completion=False,
)
failed_app = typer.Typer(
    help="Dead letters: analyses that ran out of deliveries.", no_args_is_help=True
)
app.add_typer(failed_app, name="failed")


@app.callback()
def _configure() -> None:
    # The command's own output is the report; library log lines (a connection drained at
    # exit, a migration applied) would only interleave with it. Errors still show.
    from runstream.telemetry import configure_logging

    configure_logging("runstream-cli", os.environ.get("RUNSTREAM_CLI_LOG_LEVEL", "ERROR"))

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="local state folder [default: $RUNSTREAM_DATA_DIR or .runstream]"
    ),
]


def _settings(data_dir: Path | None) -> CliSettings:
    return load_settings(data_dir)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run_until_signal(make: object) -> None:
    """Run a coroutine factory taking a stop event; SIGINT/SIGTERM set the event."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await make(stop)  # type: ignore[operator]

    asyncio.run(main())


# --- running the stack ------------------------------------------------------------------
@app.command()
def up(
    http_port: Annotated[
        int | None, typer.Option(help="gateway port [default: $RUNSTREAM_HTTP_PORT or 8000]")
    ] = None,
    nats_port: Annotated[
        int | None,
        typer.Option(help="nats-server port [default: $RUNSTREAM_NATS_PORT, else 4222 if free]"),
    ] = None,
    data_dir: DataDir = None,
    ready_timeout: Annotated[
        float, typer.Option(help="seconds to wait for the gateway's /readyz")
    ] = 90.0,
) -> None:
    """The whole stack on this machine: nats-server, Postgres, every service. Ctrl-C stops it."""
    from runstream.cli.up import UpOptions, run_up

    settings = load_settings(data_dir, use_dev_env=False)
    options = UpOptions(
        data_dir=settings.data_dir, http_port=http_port, nats_port=nats_port,
        ready_timeout_s=ready_timeout,
    )
    try:
        code = run_up(settings, options)
    except Exception as exc:  # start-up failed; everything started is already stopped
        _fail(f"runstream up failed: {exc}")
    raise typer.Exit(code)


@app.command()
def token(
    sub: Annotated[str, typer.Option("--sub", help="the owner (token subject)")],
    ttl: Annotated[str, typer.Option(help="lifetime, e.g. 12h, 30d")] = "30d",
    data_dir: DataDir = None,
) -> None:
    """Print a bearer token for an owner (secret: $RUNSTREAM_JWT_SECRET or <data-dir>/secret)."""
    settings = _settings(data_dir)
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        _fail(str(exc), 2)
    secret = resolve_secret(
        settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
        settings.data_dir)
    if not secret:
        _fail(
            "no secret: set RUNSTREAM_JWT_SECRET or run `runstream up` "
            f"(it writes {settings.data_dir}/secret)"
        )
    typer.echo(make_token(secret, sub, lifetime, issuer=settings.jwt_issuer))  # type: ignore[arg-type]


def _exec_module(module: str, *args: str, env: dict[str, str] | None = None) -> None:
    from runstream.cli.up import has_main

    if not has_main(module):
        _fail(f"{module} is not installed here (no {module}.__main__)")
    os.execve(sys.executable, [sys.executable, "-m", module, *args], env or dict(os.environ))


@app.command()
def gateway() -> None:
    """Run the gateway in the foreground."""
    _exec_module("runstream.gateway")


@app.command()
def projector() -> None:
    """Run the projector in the foreground."""
    _exec_module("runstream.projector")


class Worker(StrEnum):
    analysis = "analysis"
    execution = "execution"
    chart = "chart"


@app.command()
def worker(kind: Annotated[Worker, typer.Argument(help="which worker")]) -> None:
    """Run one worker in the foreground."""
    _exec_module(f"runstream.{kind.value}_worker")


# --- inspecting and operating -----------------------------------------------------------
@app.command()
def status(data_dir: DataDir = None) -> None:
    """Stream state, consumers (pending, ack pending, redelivered), workers, projector lag."""
    from runstream.cli import status as st

    settings = _settings(data_dir)
    try:
        report = asyncio.run(st.collect(settings))
    except Exception as exc:
        _fail(f"cannot read {settings.nats_url}: {exc}")
    typer.echo(st.render(report, settings.nats_url))


@failed_app.command("list")
def failed_list(
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    data_dir: DataDir = None,
) -> None:
    """Dead letters: which message, which consumer, how many deliveries, why."""
    from runstream.cli import failed

    settings = _settings(data_dir)
    rows = asyncio.run(failed.list_dead_letters(settings, limit))
    typer.echo(failed.render_dead_letters(rows))


@failed_app.command("retry")
def failed_retry(message_id: str, data_dir: DataDir = None) -> None:
    """Ask a failed analysis's question again, as a new analysis linked to the old one."""
    from runstream.bus import LockHeld
    from runstream.cli import failed

    settings = _settings(data_dir)
    try:
        done = asyncio.run(failed.retry(settings, message_id))
    except failed.RetryRefused as exc:
        _fail(str(exc))
    except LockHeld as exc:
        _fail(f"the session is busy with another analysis ({exc}); retry when it settles")
    typer.echo(
        f"requested {done['message_id']} in session {done['session_id']} "
        f"(retry of {message_id}, stream seq {done['seq']})"
    )


@app.command()
def cleanup(
    older_than: Annotated[str, typer.Option(help="age cutoff, e.g. 30m, 24h, 7d")] = "24h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print what would go")] = False,
    data_dir: DataDir = None,
) -> None:
    """Remove settled sessions older than the cutoff: stream subjects, datasets, read models."""
    from runstream.cli import cleanup as cl

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        _fail(str(exc), 2)
    settings = _settings(data_dir)
    removed = asyncio.run(cl.cleanup(settings, age, dry_run=dry_run))
    typer.echo(cl.render(removed, dry_run=dry_run, older_than=older_than))


@app.command()
def rebuild(data_dir: DataDir = None) -> None:
    """Fold the whole stream into a fresh schema and swap it in (the projector's rebuild)."""
    # The projector owns rebuilding: run its command, as `gateway` runs the gateway's,
    # with what dev.env says about the stack `up` started.
    _exec_module("runstream.projector", "rebuild", env=child_env(_settings(data_dir)))


@app.command()
def tail(
    session_id: Annotated[str, typer.Argument(help="the session to follow")],
    after_seq: Annotated[int, typer.Option(help="start after this stream sequence")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Print a session's events as readable lines, then follow live (Ctrl-C stops)."""
    from runstream.cli.tail import tail as run_tail
    from runstream.contracts import InvalidId, validate_id

    try:
        validate_id(session_id, field="session_id")
    except InvalidId as exc:
        _fail(str(exc), 2)
    settings = _settings(data_dir)
    _run_until_signal(lambda stop: run_tail(settings, session_id, after_seq, stop))
