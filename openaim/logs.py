"""Application logging. Nothing that identifies a patient goes into logs: the access log drops query
strings (a worklist search carries a patient ID), and the platform never logs DICOM attributes."""

from __future__ import annotations

import logging
from typing import Any


class DropQueryStrings(logging.Filter):
    """uvicorn's access log record args are (client, method, path with query, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def uvicorn_log_config() -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"no_query": {"()": DropQueryStrings}},
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "filters": ["no_query"],
            },
        },
        "loggers": {
            "": {"handlers": ["stderr"], "level": "INFO"},
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "httpx": {"level": "WARNING"},
        },
    }
