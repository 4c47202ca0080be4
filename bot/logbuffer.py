"""In-memory ring buffer of the bot's recent log lines, for /log [n] (SPEC T-2 ops) and the
monitor's "> 5 errors in the recent log window" (SPEC M-1).

Secrets never reach it: every line passes :func:`redact` (Telegram bot tokens, anything that
looks like an API key or secret assignment) and the values registered with :meth:`add_secret`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from dataclasses import dataclass

# Telegram bot tokens look like "123456:ABC-DEF..." (id, colon, 30+ url-safe characters).
_TOKEN = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{20,}\b")
_ASSIGNED = re.compile(r"(?i)\b(api[_-]?key|secret|token|password)\b(\s*[=:]\s*)(\S+)")
REDACTED = "[redacted]"


def redact(text: str, secrets: frozenset[str] = frozenset()) -> str:
    """``text`` with bot tokens, ``key=value`` secrets and the given secret values replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _TOKEN.sub(REDACTED, text)
    return _ASSIGNED.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One formatted, redacted log record: created_ms (epoch ms UTC, wall clock), level number."""

    created_ms: int
    levelno: int
    text: str


class RingBufferHandler(logging.Handler):
    """A logging handler keeping the last ``capacity`` records, formatted and redacted.

    Args:
        capacity: how many lines to keep (older ones are dropped).
    """

    def __init__(self, capacity: int = 500) -> None:
        super().__init__(level=logging.INFO)
        self._lines: deque[LogLine] = deque(maxlen=capacity)
        self._guard = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))

    def add_secret(self, value: str) -> None:
        """Never show ``value`` (a token, an API key) in a kept line."""
        if value:
            self._secrets = self._secrets | {value}

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one record (never raises: logging must not break the bot)."""
        try:
            text = redact(self.format(record), self._secrets)
            with self._guard:
                self._lines.append(LogLine(int(record.created * 1000), record.levelno, text))
        except Exception:  # logging.Handler contract: report, do not raise
            self.handleError(record)

    def tail(self, n: int) -> list[str]:
        """The last ``n`` lines, oldest first."""
        with self._guard:
            lines = list(self._lines)
        return [line.text for line in lines[-n:]] if n > 0 else []

    def errors_since(self, since_ms: int) -> int:
        """How many ERROR (or worse) lines were logged at or after ``since_ms`` (epoch ms UTC)."""
        with self._guard:
            return sum(1 for line in self._lines if line.levelno >= logging.ERROR and line.created_ms >= since_ms)


_INSTALLED: RingBufferHandler | None = None


def install(capacity: int = 500) -> RingBufferHandler:
    """Attach one process-wide ring buffer to the root logger (idempotent) and return it."""
    global _INSTALLED
    if _INSTALLED is None:
        _INSTALLED = RingBufferHandler(capacity)
        logging.getLogger().addHandler(_INSTALLED)
    return _INSTALLED
