"""Running as a service for months (issue 15: deployment): the systemd notify protocol and a
heartbeat file, both fed from the bot's own event loop, so a hung loop is seen from outside.

* systemd (``Type=notify``, ``WatchdogSec=``): ``READY=1`` once the build card is out,
  ``WATCHDOG=1`` every half watchdog period while the event loop turns, ``STOPPING=1`` when the
  L-2 shutdown starts. A loop that hangs stops the pings; systemd kills the process (SIGABRT)
  and restarts it (``Restart=on-failure``). The protocol is a datagram to ``$NOTIFY_SOCKET``
  (sd_notify(3)); nothing is sent when the variable is not set.
* heartbeat file ``<database>.heartbeat`` (JSON: pid, epoch ms UTC), rewritten atomically on the
  same beat: ``optiflow health`` (the container health check) and ``optiflow watch`` (the
  watchdog outside the bot, issue 15 item 9) read its age.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_SUFFIX = ".heartbeat"
DEFAULT_BEAT_S = 15.0


def heartbeat_path(db_path: str | Path) -> Path:
    """The heartbeat file of the database at ``db_path``: the same path plus ``.heartbeat``."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + HEARTBEAT_SUFFIX)


def sd_notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to the service manager (sd_notify(3)); False when not
    run by systemd (no ``NOTIFY_SOCKET``) or when the socket refused it. Never raises and never
    blocks (the datagram is dropped when the manager's queue is full)."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.connect(address)
            sock.send(state.encode("utf-8"))  # never blocks the event loop: a full queue drops it
        return True
    except BlockingIOError:
        log.debug("systemd notify %s dropped: the manager's queue is full", state.split("=")[0])
        return False
    except OSError as exc:
        log.warning("systemd notify %s failed: %s", state.split("=")[0], exc.strerror or exc)
        return False


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC`` (when it is meant
    for this process, ``$WATCHDOG_PID``), or None when systemd runs no watchdog."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


class ServiceBeat:
    """The beat of a running bot: systemd pings and the heartbeat file (see the module doc).

    Args:
        heartbeat: the heartbeat file to rewrite on each beat (None = none).
        every: seconds between beats when systemd asks for no faster one (default 15).
        env: the environment to read ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` from (tests).
    """

    def __init__(self, heartbeat: Path | None, every: float = DEFAULT_BEAT_S,
                 env: dict[str, str] | None = None) -> None:
        self.heartbeat = heartbeat
        self.env = dict(os.environ if env is None else env)
        watchdog = watchdog_interval(self.env)
        self.every = min(every, watchdog) if watchdog else every
        self.watchdog = watchdog is not None
        self.beats = 0
        self._task: asyncio.Task | None = None

    def ready(self) -> None:
        """Start-up finished (build card sent): ``READY=1`` and the first beat, then beat on."""
        sd_notify("READY=1", self.env)
        self.beat()
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def beat(self) -> None:
        """One beat now: ``WATCHDOG=1`` (when systemd watches) and the heartbeat file."""
        if self.watchdog:
            sd_notify("WATCHDOG=1", self.env)
        if self.heartbeat is not None:
            write_heartbeat(self.heartbeat)
        self.beats += 1

    async def stopping(self) -> None:
        """The L-2 shutdown starts: no more beats, ``STOPPING=1`` (systemd then waits up to
        ``TimeoutStopSec`` instead of the watchdog)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        sd_notify("STOPPING=1", self.env)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.beat()  # runs only when the event loop turns: a hung loop stops the beats


def write_heartbeat(path: Path, now_ms: int | None = None) -> None:
    """Rewrite ``path`` atomically with this pid and the time (epoch ms UTC); errors are logged
    once per kind and never raised (a full disk must not stop trading a second way)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps({"pid": os.getpid(), "ts": now_ms}), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        log.debug("heartbeat not written: %s", exc.strerror or exc)


def heartbeat_age(path: Path, now_ms: int | None = None) -> float | None:
    """Seconds since the last beat written to ``path``, or None when there is no readable beat."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stamp = int(data["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return max(0.0, (now_ms - stamp) / 1000)
