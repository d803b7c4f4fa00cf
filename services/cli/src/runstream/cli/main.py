"""The `runstream` command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand

from runstream.cli.durations import parse_duration
from runstream.cli.settings import (
    DATABASE_NAME,
    DEFAULT_CLEANUP_EVERY,
    DEFAULT_CLEANUP_OLDER_THAN,
    DEFAULT_HTTP_PORT,
    DEFAULT_NATS_PORT,
    DEFAULT_POSTGRES_SERVER,
    CliSettings,
    child_env,
    load_settings,
)
from runstream.cli.tokens import make_token, resolve_secret

# Plain help (click's layout): every flag shows its metavar, default and environment
# variable; rich's panels print `<bool>` beside flags and eat `[...]` in help texts.
app = typer.Typer(
    help="Runstream: run the stack, inspect the stream, operate on failures.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
failed_app = typer.Typer(
    help="Dead letters: analyses that ran out of deliveries.", no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(failed_app, name="failed")


class Command(TyperCommand):
    """Help that names what an argument is (OWNER, ID), not its Python type (`<str>`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar \
                    and not param.type_descriptor.is_choice:
                param.display_type_rich = _untyped  # type: ignore[method-assign]


def _untyped(ctx: object) -> None:
    return None


@app.callback()
def _configure() -> None:
    # The command's own output is the report; library log lines (a connection drained at
    # exit, a migration applied) would only interleave with it. Errors still show.
    from runstream.telemetry import configure_logging

    configure_logging("runstream-cli", os.environ.get("RUNSTREAM_CLI_LOG_LEVEL", "ERROR"))

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", metavar="DIR", envvar="RUNSTREAM_DATA_DIR", show_default=".runstream",
        help="local state folder: dev.env, the secret, NATS and Postgres data",
    ),
]


def _settings(data_dir: Path | None) -> CliSettings:
    return load_settings(data_dir)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _duration(text: str, flag: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        _fail(f"{flag}: {exc}", 2)


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
    http_port: Annotated[int | None, typer.Option(
        metavar="PORT", envvar="RUNSTREAM_HTTP_PORT",
        show_default=f"{DEFAULT_HTTP_PORT}, or a free port when it is taken",
        help="the gateway's port (UI and API); a port given here must be free")] = None,
    nats_port: Annotated[int | None, typer.Option(
        metavar="PORT", envvar="RUNSTREAM_NATS_PORT",
        show_default=f"{DEFAULT_NATS_PORT}, or a free port when it is taken",
        help="nats-server's port; a port given here must be free")] = None,
    database_url: Annotated[str | None, typer.Option(
        metavar="URL", envvar="RUNSTREAM_DATABASE_URL",
        show_default=f"the {DATABASE_NAME} database on --postgres-server, else a cluster "
                     "of its own in <data-dir>/pg",
        help="the Postgres database of the read models, used as it is")] = None,
    postgres_server: Annotated[str, typer.Option(
        metavar="URL", envvar="RUNSTREAM_POSTGRES_SERVER",
        help=f"without --database-url: the server on which to use (and create) the "
             f"{DATABASE_NAME} database when it answers; 'off' always starts a cluster "
             "of its own")] = DEFAULT_POSTGRES_SERVER,
    data_dir: DataDir = None,
    ready_timeout: Annotated[float, typer.Option(
        metavar="SECONDS", envvar="RUNSTREAM_READY_TIMEOUT_S",
        help="how long to wait for the gateway's /readyz before printing the URL anyway",
    )] = 90.0,
    cleanup_every: Annotated[str, typer.Option(
        metavar="DURATION", envvar="RUNSTREAM_CLEANUP_EVERY",
        help="run the cleanup this often (first at start); 'off' never")
    ] = DEFAULT_CLEANUP_EVERY,
    cleanup_older_than: Annotated[str, typer.Option(
        metavar="DURATION", envvar="RUNSTREAM_CLEANUP_OLDER_THAN",
        help="the cleanup removes what is settled and older than this")
    ] = DEFAULT_CLEANUP_OLDER_THAN,
    projectors: Annotated[int, typer.Option(
        metavar="N", envvar="RUNSTREAM_PROJECTORS", min=1,
        help="projector processes; they share the RUNSTREAM_PARTITIONS partitions "
             "(with one partition the others are hot standbys)")] = 1,
    gateways: Annotated[int, typer.Option(
        metavar="N", envvar="RUNSTREAM_GATEWAY_WORKERS", min=1, max=64,
        help="gateway worker processes on the one HTTP port (SO_REUSEPORT; each has its "
             "own NATS connection and Postgres pool)")] = 1,
) -> None:
    """The whole stack on this machine: nats-server, Postgres, every service. Ctrl-C stops it."""
    from runstream.cli.retention import parse_every
    from runstream.cli.up import UpOptions, run_up

    try:
        every = parse_every(cleanup_every)
    except ValueError as exc:
        _fail(f"--cleanup-every: {exc}", 2)
    older_than = _duration(cleanup_older_than, "--cleanup-older-than")
    settings = load_settings(data_dir, use_dev_env=False)
    options = UpOptions(
        data_dir=settings.data_dir, http_port=http_port, nats_port=nats_port,
        database_url=database_url or None, postgres_server=postgres_server,
        ready_timeout_s=ready_timeout, cleanup_older_than=older_than, cleanup_every=every,
        projectors=projectors, gateways=gateways,
    )
    try:
        code = run_up(settings, options)
    except Exception as exc:  # start-up failed; everything started is already stopped
        _fail(f"runstream up failed: {exc}")
    raise typer.Exit(code)


@app.command(cls=Command)
def token(
    owner: Annotated[str | None, typer.Argument(
        metavar="OWNER", show_default=False, help="the owner (the token's subject)")] = None,
    sub: Annotated[str | None, typer.Option(
        "--sub", metavar="OWNER", hidden=True, help="the owner, as an option")] = None,
    ttl: Annotated[str, typer.Option(metavar="DURATION", help="lifetime, e.g. 12h, 30d")] = "30d",
    data_dir: DataDir = None,
) -> None:
    """Print a bearer token for OWNER (secret: $RUNSTREAM_JWT_SECRET or <data-dir>/secret)."""
    if (owner is None) == (sub is None):
        _fail("name the owner once: runstream token OWNER", 2)
    subject = owner or sub
    assert subject is not None
    settings = _settings(data_dir)
    lifetime = _duration(ttl, "--ttl")
    secret = resolve_secret(
        settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
        settings.data_dir)
    if not secret:
        _fail(
            "no secret: set RUNSTREAM_JWT_SECRET or run `runstream up` "
            f"(it writes {settings.data_dir}/secret)"
        )
    typer.echo(make_token(secret, subject, lifetime, issuer=settings.jwt_issuer))


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


@app.command(cls=Command)
def worker(kind: Annotated[Worker, typer.Argument(metavar="KIND", help="which worker")]) -> None:
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
    limit: Annotated[int, typer.Option(metavar="N", help="at most this many, newest first")] = 50,
    data_dir: DataDir = None,
) -> None:
    """Dead letters: which message, which consumer, how many deliveries, why."""
    from runstream.cli import failed

    settings = _settings(data_dir)
    rows = asyncio.run(failed.list_dead_letters(settings, limit))
    typer.echo(failed.render_dead_letters(rows))


@failed_app.command("retry", cls=Command)
def failed_retry(
    message_id: Annotated[str, typer.Argument(metavar="MESSAGE_ID",
                                              help="the failed analysis")],
    data_dir: DataDir = None,
) -> None:
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
    older_than: Annotated[str, typer.Option(
        metavar="DURATION", envvar="RUNSTREAM_CLEANUP_OLDER_THAN",
        help="remove what is settled and older than this, e.g. 30m, 24h, 7d")
    ] = DEFAULT_CLEANUP_OLDER_THAN,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print what would go")] = False,
    data_dir: DataDir = None,
) -> None:
    """Remove what is settled and older than the cutoff: idle sessions whole, the logs of
    settled analyses, chart tasks that ended without a chart (stream, objects, read models).
    """
    from runstream.cli import cleanup as cl

    age = _duration(older_than, "--older-than")
    settings = _settings(data_dir)
    plan = asyncio.run(cl.cleanup(settings, age, dry_run=dry_run))
    typer.echo(cl.render(plan, dry_run=dry_run, older_than=older_than))


@app.command()
def rebuild(data_dir: DataDir = None) -> None:
    """Fold the whole stream into a fresh schema and swap it in (the projector's rebuild)."""
    # The projector owns rebuilding: run its command, as `gateway` runs the gateway's,
    # with what dev.env says about the stack `up` started.
    _exec_module("runstream.projector", "rebuild", env=child_env(_settings(data_dir)))


@app.command(cls=Command)
def tail(
    session_id: Annotated[str, typer.Argument(metavar="SESSION_ID",
                                              help="the session to follow")],
    after_seq: Annotated[int, typer.Option(metavar="SEQ",
                                           help="start after this stream sequence")] = 0,
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


@app.command(cls=Command)
def follow(
    target: Annotated[str, typer.Argument(
        metavar="ID", help="a message id (ends when it settles) or a session id (Ctrl-C stops)")],
    url: Annotated[str | None, typer.Option(
        metavar="URL", envvar="RUNSTREAM_URL", show_default="RUNSTREAM_URL from dev.env",
        help="the gateway")] = None,
    token: Annotated[str | None, typer.Option(
        metavar="TOKEN", envvar="RUNSTREAM_TOKEN", show_default="RUNSTREAM_TOKEN from dev.env",
        help="a bearer token of the owner")] = None,
    data_dir: DataDir = None,
) -> None:
    """Watch an analysis as the UI shows it: steps with progress bars, logs, the table.

    Exit status: 0 when the analysis completed, 1 when it failed, was cancelled or expired.
    """
    from runstream.cli.follow import FollowError, run_follow
    from runstream.contracts import InvalidId, validate_id

    try:
        validate_id(target, field="id")
    except InvalidId as exc:
        _fail(str(exc), 2)
    settings = _settings(data_dir)
    base = url or settings.url
    bearer = token or (settings.token.get_secret_value() if settings.token else None)
    if not base or not bearer:
        _fail("no gateway: run `runstream up` (it writes dev.env) or set RUNSTREAM_URL and "
              "RUNSTREAM_TOKEN", 2)
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_follow(base, bearer, target, stop=stop)

    try:
        code = asyncio.run(main())
    except FollowError as exc:
        _fail(str(exc))
    raise typer.Exit(code)
