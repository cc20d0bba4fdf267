"""The ``digest`` group, the options and helpers its commands share, and the entry point.

The commands (one module per command group) are thin over the library in
``digest.ops.jobs``: each parses its options, calls one library function and prints what
happened. A :class:`~digest.core.errors.DigestError` becomes one line on stderr and a
non-zero exit; ``--debug`` shows the traceback instead.

No secret reaches the terminal: every error line, every log record and every traceback
goes through one :class:`~digest.core.redact.Redactor` that knows the secrets of the
environment and of the loaded settings (see :func:`digest.config.secret_values`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from digest.cli.logs import LOG_FORMATS, log_handler
from digest.config import Settings, load_settings, secret_environment, secret_values
from digest.core.errors import DigestError
from digest.core.redact import Redactor, install_log_redaction

F = TypeVar("F", bound=Callable[..., Any])


#: Masks the secrets of this process in everything the CLI prints.
redact = Redactor()


class CannotWrite(DigestError):
    """An output file given on the command line could not be written."""


def example(command: str) -> str:
    """The epilog of a command's --help: an example, shown after the options."""
    return f"\b\nExample:\n    {command}"


class State:
    def __init__(self) -> None:
        self.config = Path("config.toml")
        self.debug = False

    def settings(self) -> Settings:
        settings = load_settings(self.config)
        redact.add(*secret_values(settings))
        return settings


def _set_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(State).config = value


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).debug = True
        logging.getLogger("digest").setLevel(logging.DEBUG)


def common(func: F) -> F:
    """--config and --debug on every command, as on the group."""
    func = click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path),
        default=None,
        expose_value=False,
        callback=_set_config,
        is_eager=True,
        help="Configuration file (default: ./config.toml).",
    )(func)
    func = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_set_debug,
        is_eager=True,
        help="Show tracebacks and debug logging.",
    )(func)
    return func


def state() -> State:
    return click.get_current_context().ensure_object(State)


def run_async(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(func(*args, **kwargs))

    return wrapper  # type: ignore[return-value]


def echo_err(message: str) -> None:
    click.echo(redact(message), err=True)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=example("digest demo"),
)
@click.version_option(package_name="digest", prog_name="digest", message="%(prog)s %(version)s")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="Log lines as text or as one JSON object each (for log shippers); times in UTC.",
)
@common
def cli(log_format: str) -> None:
    """digest: collect a week of articles, compose a digest, send it to subscribers."""
    logging.basicConfig(handlers=[log_handler(log_format)], level=logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and a non-zero exit for any DigestError.

    With ``--debug`` (and for an unexpected exception) the traceback is printed instead,
    chained exceptions included, with every known secret masked.
    """
    redact.add(*secret_environment(os.environ))
    install_log_redaction(redact)
    try:
        cli.main(args=argv, prog_name="digest", standalone_mode=False)
    except click.exceptions.Abort:
        echo_err("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DigestError as exc:
        if _debug_requested(argv):
            _print_traceback(exc)
        else:
            echo_err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        echo_err("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: its traceback, as Python would print it, masked
        _print_traceback(exc)
        sys.exit(1)


def _print_traceback(exc: BaseException) -> None:
    sys.stderr.write(redact.format_exception(exc))
    sys.stderr.flush()


def _debug_requested(argv: list[str] | None) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else argv)
