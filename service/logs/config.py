"""Process logging in one place: JSON lines (or text) on stderr for the API, uvicorn's access
log and the Celery workers, each line carrying the ids of the request or job it belongs to.

`kts serve` and `kts worker` turn it on (KTS_LOG_FORMAT, KTS_LOG_LEVEL); uvicorn receives the
same configuration as its `log_config`, and the workers install it from Celery's
`setup_logging` signal, so every logger goes through one handler and one formatter.
"""

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from service.logs.context import current

# uvicorn passes a coloured copy of some messages as an extra attribute: not worth a field
SKIPPED = (*RESERVED_ATTRS, "color_message")
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonLines(JsonFormatter):
    """One JSON object per line: time, level, logger, message, the scope's ids, any `extra`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", SKIPPED)
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data.update(current())
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # uvicorn's access line: (client, method, path, http version, status)
            log_data.update(zip(ACCESS_FIELDS, record.args, strict=False))
        super().add_fields(log_data, record, message_dict)


class TextLines(logging.Formatter):
    """The same lines for a terminal: time, level, logger, message, then the scope's ids."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{k}={v}" for k, v in current().items())
        if not ids:
            return text
        first, sep, rest = text.partition("\n")
        return f"{first} [{ids}]{sep}{rest}"


def logging_config(fmt: str = "json", level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for `fmt` ("json" or "text"): one stderr handler on the root logger, and
    uvicorn's and Celery's loggers handing their records to it."""
    level = level.upper()
    formatter = (
        "service.logs.config.JsonLines" if fmt == "json" else "service.logs.config.TextLines"
    )
    passed_on = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"kts": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "kts",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {**passed_on, "level": level},
            "uvicorn.error": {**passed_on, "level": level},
            "uvicorn.access": {**passed_on, "level": level},
            "celery": {**passed_on, "level": level},
            "alembic.runtime.plugins": {**passed_on, "level": "WARNING"},  # one line per plugin
        },
        "root": {"handlers": ["stderr"], "level": level},
    }


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Install `logging_config` in this process."""
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(
            f"Expected a log level: DEBUG, INFO, WARNING or ERROR. Received: level={level!r}"
        )
    logging.config.dictConfig(logging_config(fmt, level))
    logging.captureWarnings(True)  # Python warnings become log lines in the same format
