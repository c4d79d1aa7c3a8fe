"""The log and trace settings of Triton's logging and trace extensions: the log level is the
server's own (Python logging); tracing is not offered, and asking for it says where the timings are."""
from __future__ import annotations

import logging

from ..errors import BadRequest

_LOG_FLAGS = {"log_error": logging.ERROR, "log_warning": logging.WARNING, "log_info": logging.INFO}
TRACE = {"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1", "log_frequency": "0",
         "trace_file": "", "trace_mode": "triton"}


def log_settings() -> dict:
    level = logging.getLogger().getEffectiveLevel()
    return {"log_file": "", "log_info": level <= logging.INFO, "log_warning": level <= logging.WARNING,
            "log_error": level <= logging.ERROR, "log_verbose_level": 1 if level <= logging.DEBUG else 0,
            "log_format": "default"}


def update_log_settings(body: dict) -> dict:
    known = {*_LOG_FLAGS, "log_verbose_level", "log_file", "log_format"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unknown logging setting {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    if body.get("log_file") not in (None, ""):
        raise BadRequest("log_file cannot be changed: the server logs to its standard error")
    if body.get("log_format") not in (None, "default"):
        raise BadRequest("log_format must be 'default'")
    current = log_settings()
    for key, value in body.items():
        if key in _LOG_FLAGS and not isinstance(value, bool):
            raise BadRequest(f"{key} must be true or false")
    verbose = body.get("log_verbose_level", current["log_verbose_level"])
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise BadRequest("log_verbose_level must be a non-negative integer")
    flags = {k: body.get(k, current[k]) for k in _LOG_FLAGS}
    # the most verbose level any enabled flag asks for; all off leaves only critical messages
    level = logging.DEBUG if verbose else min((lv for k, lv in _LOG_FLAGS.items() if flags[k]), default=logging.CRITICAL)
    logging.getLogger().setLevel(level)
    return log_settings()


def check_trace_update(level) -> None:
    if level not in (None, ["OFF"], "OFF", []):
        raise BadRequest("tracing is not supported by this server: trace_level can only be OFF; "
                         "request timings are in /v2/models/{m}/stats and /metrics")
