"""Issue 15 items 8 and 9 — run it on a server: the systemd units and the container definitions
parse (``systemd-analyze verify`` where it exists; no docker engine here, so the Dockerfile and
compose file are parsed and their commands checked against the CLI), the bot talks sd_notify
from its event loop (READY, WATCHDOG pings that stop when the loop hangs, STOPPING), writes the
heartbeat ``optiflow health`` reads, ``optiflow backup`` copies a running bot's database into a
file that restores and verifies, and ``optiflow alert`` / ``optiflow watch`` reach Telegram with
no database and no running bot."""

from __future__ import annotations

import asyncio
import configparser
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bot.cli import build_parser
from bot.service import ServiceBeat, heartbeat_age, heartbeat_path, write_heartbeat
from tests.fake_telegram import FakeTelegram

PROJECT = Path(__file__).resolve().parent.parent
UNIT = PROJECT / "deploy" / "systemd" / "optiflow.service"
ALERT_UNIT = PROJECT / "deploy" / "systemd" / "optiflow-alert@.service"
USER, GROUP_CHAT = 4242, -100777
TOKEN = "123456:TEST-TOKEN"


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPTIFLOW_", "BINANCE_",
                                                                      "NOTIFY_SOCKET", "WATCHDOG_"))}
    return {**base, "PYTHONPATH": str(PROJECT), **extra}


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def cli_args(command: str) -> list[str]:
    """The optiflow arguments of a unit's command line (after the optiflow binary)."""
    words = shlex.split(command)
    return words[words.index(next(w for w in words if w.endswith("/optiflow"))) + 1:]


# ------------------------------------------------------------------ definitions parse (8, 9)
def test_systemd_unit_restarts_on_failure_stops_gracefully_and_watches_the_loop():
    service = unit(UNIT)
    s, u = service["Service"], service["Unit"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert int(s["WatchdogSec"]) > 2 * 15  # the bot beats every 15 s at most, half the period if less
    assert s["Restart"] == "on-failure" and s["KillSignal"] == "SIGTERM"
    assert int(s["TimeoutStopSec"]) >= 60  # the L-2 steps: 10 + 10 + 10 + 5 s at most
    assert s["EnvironmentFile"].startswith("/etc/optiflow/")  # secrets in a file, not in the unit
    assert "TOKEN" not in UNIT.read_text() or "TELEGRAM_BOT_TOKEN," in UNIT.read_text()
    build_parser().parse_args(cli_args(s["ExecStart"]))
    assert u["OnFailure"] == "optiflow-alert@%n.service"
    post = s["ExecStopPost"]
    assert "$SERVICE_RESULT" in post and "optiflow alert --text" in post
    alert = unit(ALERT_UNIT)["Service"]
    assert alert["Type"] == "oneshot" and alert["EnvironmentFile"] == s["EnvironmentFile"]
    args = build_parser().parse_args(cli_args(alert["ExecStart"]))
    assert args.command == "alert" and "%i" in args.text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_both_units(tmp_path):
    """``systemd-analyze verify`` on the units with this checkout's paths (it checks the binary
    exists, every key and value parses): no warning at all."""
    (tmp_path / "optiflow.env").write_text("")
    optiflow = Path(sys.executable).parent / "optiflow"
    if not optiflow.exists():
        pytest.skip("the optiflow console script is not installed in this environment")
    for source in (UNIT, ALERT_UNIT):
        text = source.read_text().replace("/opt/optiflow/.venv/bin/optiflow", str(optiflow))
        text = text.replace("/etc/optiflow/optiflow.env", str(tmp_path / "optiflow.env"))
        text = text.replace("/var/lib/optiflow", str(tmp_path)).replace("User=optiflow", "User=root")
        text = text.replace("Group=optiflow", "Group=root")
        (tmp_path / source.name).write_text(text)
    (tmp_path / "optiflow-alert@probe.service").write_text((tmp_path / ALERT_UNIT.name).read_text())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / UNIT.name),
                             str(tmp_path / "optiflow-alert@probe.service")], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (PROJECT / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
            current = ""
    return lines


def test_dockerfile_builds_the_cli_with_a_health_check_and_a_data_volume():
    import json

    instructions = dockerfile()
    known = {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "ENTRYPOINT",
             "CMD", "ARG", "LABEL", "EXPOSE"}
    assert instructions[0][0] == "FROM" and all(word in known for word, _ in instructions)
    by = {}
    for word, rest in instructions:
        by.setdefault(word, []).append(rest)
    for copy in by["COPY"]:
        for source in copy.split()[:-1]:
            assert (PROJECT / source).exists(), source
    assert json.loads(by["VOLUME"][0]) == ["/data"]
    assert by["STOPSIGNAL"] == ["SIGTERM"] and by["USER"][-1] != "root"
    entry = json.loads(by["ENTRYPOINT"][0])
    assert entry == ["optiflow"]
    build_parser().parse_args(json.loads(by["CMD"][-1]))
    health = json.loads(by["HEALTHCHECK"][0].split("CMD", 1)[1].strip())
    assert health[0] == "optiflow" and build_parser().parse_args(health[1:]).command == "health"
    env = " ".join(by["ENV"])
    assert "OPTIFLOW_DB_PATH=/data/optiflow.db" in env and "OPTIFLOW_DATA_DIR=/opt/optiflow/data" in env


def test_compose_file_has_the_bot_the_watchdog_and_an_optional_bot_api_server():
    compose = yaml.safe_load((PROJECT / "compose.yaml").read_text())
    services = compose["services"]
    bot, watch, api = services["bot"], services["watch"], services["telegram-bot-api"]
    assert "optiflow-data:/data" in bot["volumes"] and "optiflow-data" in compose["volumes"]
    assert bot["restart"] == "unless-stopped" and bot["stop_signal"] == "SIGTERM"
    assert int(bot["stop_grace_period"].rstrip("s")) >= 60
    assert bot["healthcheck"]["test"][:3] == ["CMD", "optiflow", "health"]
    build_parser().parse_args(bot["healthcheck"]["test"][2:])
    build_parser().parse_args(bot["command"])
    assert build_parser().parse_args(watch["command"]).command == "watch"
    assert "optiflow-data:/data:ro" in watch["volumes"]  # the watchdog only reads the heartbeat
    assert api["profiles"] == ["botapi"] and api["image"].startswith("aiogram/telegram-bot-api")
    assert all(s.get("env_file") == ["optiflow.env"] for s in services.values())
    ignored = (PROJECT / ".dockerignore").read_text().split()
    assert {"optiflow.env", ".env", "*.db"} <= set(ignored)  # secrets and databases stay out of the image


# ------------------------------------------------------------------ sd_notify + heartbeat (8)
def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket, into: list[tuple[float, str]]) -> None:
    while True:
        try:
            into.append((time.monotonic(), sock.recv(4096).decode()))
        except BlockingIOError:
            return


async def test_run_notifies_systemd_from_its_event_loop_and_writes_the_heartbeat(tmp_path):
    """``optiflow run`` under a (fake) systemd: READY=1 after the build card, WATCHDOG=1 every
    half WATCHDOG_USEC, the heartbeat that ``optiflow health`` accepts; SIGTERM gives STOPPING=1,
    the L-2 shutdown message and exit 0; afterwards the heartbeat goes stale."""
    telegram = FakeTelegram()
    await telegram.start()
    sock = _notify_socket(tmp_path)
    db = tmp_path / "svc.db"
    messages: list[tuple[float, str]] = []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--db", str(db), "--symbols", "XRP", "--timeframe", "5m",
        "--speed", "100", cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE=telegram.base, TELEGRAM_ALLOWED_USER_IDS=str(USER),
                NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="1000000"),
    )
    try:
        async def until(predicate, timeout=90):
            async with asyncio.timeout(timeout):
                while not predicate():
                    _drain(sock, messages)
                    await asyncio.sleep(0.05)

        await until(lambda: sum(m == "WATCHDOG=1" for _, m in messages) >= 4)
        states = [m for _, m in messages]
        assert states[0] == "READY=1"
        assert any(t.startswith("<b>🚀 OptiFlow") for t in telegram.texts_to(USER))  # ready after the card
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        assert all(0.2 < b - a < 1.0 for a, b in zip(pings, pings[1:]))  # every ~0.5 s, inside WatchdogSec
        health = subprocess.run([sys.executable, "-m", "bot.cli", "health", "--db", str(db), "--max-age", "5"],
                                capture_output=True, text=True, env=env(), timeout=60)
        assert health.returncode == 0 and health.stdout.startswith("healthy"), health.stdout
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 60)
        _drain(sock, messages)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        sock.close()
        await telegram.stop()
    assert code == 0
    assert "STOPPING=1" in [m for _, m in messages]
    assert telegram.texts_to(USER)[-1].startswith("🛑 Bot shutting down… (SIGTERM)")
    time.sleep(1.2)
    stale = subprocess.run([sys.executable, "-m", "bot.cli", "health", "--db", str(db), "--max-age", "1"],
                           capture_output=True, text=True, env=env(), timeout=60)
    assert stale.returncode == 1 and stale.stdout.startswith("unhealthy")


async def test_a_hung_event_loop_stops_the_watchdog_pings(tmp_path):
    """The pings come from the event loop itself: while a callback blocks the loop for 1.5 s
    (a hang), no WATCHDOG=1 is sent, so systemd's WatchdogSec fires and restarts the bot."""
    sock = _notify_socket(tmp_path)
    messages: list[tuple[float, str]] = []
    beat = ServiceBeat(tmp_path / "x.heartbeat",
                       env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"})
    try:
        beat.ready()
        await asyncio.sleep(0.5)
        _drain(sock, messages)
        time.sleep(1.5)  # the loop hangs
        await asyncio.sleep(0.5)
        _drain(sock, messages)
        await beat.stopping()
        _drain(sock, messages)
    finally:
        sock.close()
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) >= 1.4 and sorted(gaps)[len(gaps) // 2] < 0.3
    assert messages[-1][1] == "STOPPING=1"


# ------------------------------------------------------------------ backup and restore (8)
async def test_backup_of_a_running_bot_restores_and_verifies(tmp_path):
    """``optiflow backup`` while ``optiflow run`` trades on the file (it holds the L-4 lock):
    each copy passes integrity_check and ``audit verify --head`` with the head it printed; the
    README's restore (stop, copy over, drop -wal/-shm) gives a file the bot starts on."""
    db = tmp_path / "live.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run", "--db", str(db), "--speed", "20000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env())
    heads = []
    try:
        assert "console chat" in process.stdout.readline()
        for n in range(3):
            out = tmp_path / "backups" / f"b{n}.db"
            result = subprocess.run([sys.executable, "-m", "bot.cli", "backup", "--db", str(db), "--out", str(out)],
                                    capture_output=True, text=True, env=env(), timeout=120)
            assert result.returncode == 0, result.stderr
            heads.append(result.stdout.strip().rsplit("audit head ", 1)[1])
            time.sleep(1.0)
        again = subprocess.run([sys.executable, "-m", "bot.cli", "backup", "--db", str(db), "--out", str(out)],
                               capture_output=True, text=True, env=env(), timeout=120)
        assert again.returncode == 2 and "never overwrites" in again.stderr
    finally:
        process.communicate("quit\n", timeout=120)
    assert process.returncode == 0
    assert len(set(heads)) > 1  # the bot kept writing between the copies
    for n, head in enumerate(heads):
        copy = tmp_path / "backups" / f"b{n}.db"
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        verify = subprocess.run([sys.executable, "-m", "bot.cli", "audit", "verify", "--db", str(copy), "--head", head],
                                capture_output=True, text=True, env=env(), timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    # Restore (README): the bot is stopped; the backup replaces the file, its -wal/-shm go.
    shutil.copy(tmp_path / "backups" / "b1.db", db)
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    restored = subprocess.run([sys.executable, "-m", "bot.cli", "run", "--db", str(db), "--speed", "max", "--say",
                               "/audit"], capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=300)
    assert restored.returncode == 0, restored.stderr[-2000:]
    assert "Audit chain OK" in restored.stdout


# ------------------------------------------------------------------ alert and watch (9)
async def test_alert_reaches_every_notification_chat_without_a_database(tmp_path):
    """``optiflow alert --text``: one message to each allowed user and notification chat, through
    a 429 (waited out), with no database anywhere; exit 1 with one line per chat when Telegram
    refuses."""
    telegram = FakeTelegram()
    await telegram.start()
    settings = env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE=telegram.base, TELEGRAM_ALLOWED_USER_IDS=str(USER),
                   TELEGRAM_NOTIFY_CHAT_IDS=str(GROUP_CHAT))
    try:
        telegram.fail(429, retry_after=1, method="sendMessage")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "alert", "--text", "💥 optiflow.service failed\\nsee journalctl",
            cwd=tmp_path, env=settings, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        telegram.fail_all = 500
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "alert", "--text", "second", cwd=tmp_path, env=settings,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await telegram.stop()
    for chat in (USER, GROUP_CHAT):
        assert telegram.texts_to(chat) == ["💥 optiflow.service failed\nsee journalctl"]
    assert process.returncode == 1 and "Traceback" not in err.decode()
    assert len(err.decode().strip().splitlines()) == 2
    assert list(tmp_path.iterdir()) == []  # no database, no lock, no file of any kind


async def test_watch_alerts_once_when_the_heartbeat_stops_and_once_when_it_is_back(tmp_path):
    """``optiflow watch``: the bot's heartbeat goes stale (dead or hung) → one DOWN message;
    fresh again → one "running again" message; no repeat while it stays down."""
    telegram = FakeTelegram()
    await telegram.start()
    db = tmp_path / "w.db"
    beat = heartbeat_path(db)
    write_heartbeat(beat)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "watch", "--db", str(db), "--max-age", "1", "--every", "0.2", cwd=tmp_path,
        env=env(TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE=telegram.base, TELEGRAM_ALLOWED_USER_IDS=str(USER)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        texts = lambda: telegram.texts_to(USER)  # noqa: E731
        async with asyncio.timeout(60):
            while not texts():
                await asyncio.sleep(0.1)  # the heartbeat is not rewritten: it goes stale
        await asyncio.sleep(1.0)
        assert len(texts()) == 1 and "DOWN or hung" in texts()[0]
        async with asyncio.timeout(60):
            while len(texts()) < 2:
                write_heartbeat(beat)
                await asyncio.sleep(0.1)
        assert "running again" in texts()[1]
        assert heartbeat_age(beat) is not None and heartbeat_age(beat) < 1
    finally:
        process.kill()
        await process.wait()
        await telegram.stop()
    assert len(texts()) == 2
