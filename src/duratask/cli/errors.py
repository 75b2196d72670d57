"""Exit codes of the command line, and the translation of errors into one line each."""

from __future__ import annotations

import json
from enum import IntEnum

import click

from duratask.errors import (
    DurataskError,
    InvalidInstanceIdError,
    InvalidOperationError,
    InvalidScheduleError,
    OrchestrationAlreadyExistsError,
    OrchestrationNotFoundError,
    OrchestrationWaitTimeoutError,
    PayloadTooLargeError,
    SerializationError,
    StoreError,
)


class ExitCode(IntEnum):
    """What a ``duratask`` process's exit status means (documented in docs/cli.md)."""

    OK = 0
    NOT_FOUND_OR_REFUSED = 1  # no such instance, or the operation does not apply to it
    USAGE = 2  # bad arguments: options, JSON, times, ids, missing store
    INSTANCE_FAILED = 3  # ``status --wait``: the instance ended FAILED or TERMINATED
    WAIT_TIMEOUT = 4  # ``status --wait``: the wait ran out of time
    STORE = 5  # the task hub store is unreachable or failed
    INTERRUPTED = 130  # a worker stopped by a second Ctrl+C, without finishing its work


class CliError(click.ClickException):
    """An error shown as one ``Error: ...`` line on stderr; its class sets the exit code."""

    exit_code = int(ExitCode.NOT_FOUND_OR_REFUSED)


class _UsageError(CliError):
    exit_code = int(ExitCode.USAGE)


class _InstanceFailedError(CliError):
    exit_code = int(ExitCode.INSTANCE_FAILED)


class _WaitTimeoutError(CliError):
    exit_code = int(ExitCode.WAIT_TIMEOUT)


class _StoreError(CliError):
    exit_code = int(ExitCode.STORE)


_BY_CODE: dict[int, type[CliError]] = {
    cls.exit_code: cls
    for cls in (CliError, _UsageError, _InstanceFailedError, _WaitTimeoutError, _StoreError)
}


def cli_error(message: str, code: ExitCode) -> CliError:
    """The error to raise for ``message``, exiting with ``code``."""
    return _BY_CODE[code](message)


def usage_error(message: str) -> CliError:
    """Bad input from the command line (exit code 2)."""
    return cli_error(message, ExitCode.USAGE)


def translate(exc: BaseException) -> CliError | None:
    """The one-line error for an exception raised by a command, or None to let it through."""
    match exc:
        case OrchestrationNotFoundError() | InvalidOperationError():
            return cli_error(str(exc), ExitCode.NOT_FOUND_OR_REFUSED)
        case OrchestrationAlreadyExistsError():
            return cli_error(str(exc), ExitCode.NOT_FOUND_OR_REFUSED)
        case OrchestrationWaitTimeoutError():
            return cli_error(str(exc), ExitCode.WAIT_TIMEOUT)
        case StoreError():
            return cli_error(f"task hub store: {exc}", ExitCode.STORE)
        case (
            InvalidInstanceIdError()
            | InvalidScheduleError()
            | PayloadTooLargeError()
            | SerializationError()
        ):
            return usage_error(str(exc))
        case DurataskError():
            return cli_error(str(exc), ExitCode.NOT_FOUND_OR_REFUSED)
        case OSError():
            # Files the store could not create or open (permissions, missing paths...).
            return cli_error(f"task hub store: {exc}", ExitCode.STORE)
        case json.JSONDecodeError():
            return usage_error(f"invalid JSON: {exc}")
        case ValueError() | TypeError():
            # The client validates its arguments with these (statuses, times, sizes...).
            return usage_error(str(exc))
    return None
