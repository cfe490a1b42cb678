"""Logging for every ``gateway`` command: one configuration for our loggers, uvicorn's and
alembic's, as text for people or as one JSON object per line for log shippers
(``GATEWAY_LOG_FORMAT``).

``gateway serve`` hands the same dictionary to uvicorn as its ``log_config``: uvicorn
applies it again in every worker process it spawns, so workers log like the supervisor.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import threading
from types import TracebackType
from typing import Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS

LogFormat = Literal["text", "json"]

ACCESS_LOGGER = "gateway.access"
"""One line per HTTP request (gateway/observe.py), on with ``gateway serve --access-log``."""
CLI_LOGGER = "gateway.cli"
"""What the commands tell their operator; as text it reads ``gateway: <message>``."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# uvicorn adds a copy of each message with terminal colour codes: noise in a log store.
_NOT_FIELDS = [*RESERVED_ATTRS, "color_message", "taskName"]


def logging_config(fmt: LogFormat, *, level: str = "info",
                   access_log: bool = False) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` dictionary for ``fmt`` (also uvicorn's
    ``log_config``); ``level`` applies to every logger, ``access_log`` turns the request
    lines on."""
    if fmt == "json":
        json_formatter = {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,  # ISO 8601, UTC
            "reserved_attrs": _NOT_FIELDS,
        }
        formatters = {"default": json_formatter, "cli": json_formatter}
    else:
        formatters = {"default": {"format": TEXT_FORMAT},
                      "cli": {"format": "gateway: %(message)s"}}
    return {
        "version": 1,
        # Loggers created before this (uvicorn's, alembic's) keep working, through ours.
        "disable_existing_loggers": False,
        "formatters": formatters,
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "default",
                       "stream": "ext://sys.stderr"},
            "cli": {"class": "logging.StreamHandler", "formatter": "cli",
                    "stream": "ext://sys.stderr"},
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # uvicorn's loggers carry no handlers of their own here: their lines go through
            # the root handler, in the same format as ours.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            # httpx logs every upstream request at INFO: a line per call is the request
            # line's job (and the writer's), not the client library's.
            "httpx": {"level": "WARNING"},
            # What a command tells its operator shows whatever the level of the rest.
            CLI_LOGGER: {"handlers": ["cli"], "propagate": False, "level": "INFO"},
            ACCESS_LOGGER: {"level": "INFO" if access_log else "WARNING"},
        },
    }


def configure(fmt: LogFormat, *, level: str = "info", access_log: bool = False) -> None:
    """Apply the configuration to this process, and route what would bypass it."""
    logging.config.dictConfig(logging_config(fmt, level=level, access_log=access_log))
    capture_stray_output(fmt)


def capture_stray_output(fmt: LogFormat) -> None:
    """Python warnings become log records; with JSON, so do uncaught exceptions (a
    traceback would otherwise be many lines of plain text on stderr)."""
    logging.captureWarnings(True)
    if fmt == "json":
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def early_format() -> LogFormat:
    """The format before the settings are read, or when they are invalid: the environment's
    ``GATEWAY_LOG_FORMAT`` when it is valid, else text."""
    return "json" if os.environ.get("GATEWAY_LOG_FORMAT") == "json" else "text"


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
    logging.getLogger("gateway").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("gateway").error(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback))
