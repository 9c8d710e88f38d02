"""Logging set-up shared by the gateway, the readers and the bridges: text for people, JSON lines for machines.

With `--log-format json` every record is one JSON object on one line, with the process's `service` name and,
on the lines of a badge scan, the `gate`, `reader` and request `nonce` (passed as `extra=scan(...)`), so that
one scan can be followed across the reader, the decision process and the bridge by grepping its nonce.

Imported by readers and bridges: the standard library only (no Flask, no SQLAlchemy).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
SCAN_FIELDS = ("gate", "reader", "nonce")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has; anything else on a record came from `extra=` and goes into the JSON object.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def scan(gate: str = "", reader: str = "", nonce: str = "") -> dict[str, str]:
    """The `extra=` of a log line about one badge scan (empty values are left out of the line)."""
    return {"gate": gate, "reader": reader, "nonce": nonce}


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: at (UTC, ms), level, service, logger, message, the extras, the exception."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        at = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "at": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out and value not in ("", None):
                out[key] = _plain(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """The usual text line, with the scan fields appended when the record has them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name}={getattr(record, name)}" for name in SCAN_FIELDS if getattr(record, name, "")]
        return f"{line} [{' '.join(fields)}]" if fields else line


def configure(log_format: str, level: int, service: str, stream: TextIO | None = None) -> None:
    """Send the root logger's records to `stream` (stderr) in `log_format`; replaces earlier handlers."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
