"""Text of the control and ops commands (SPEC T-2, T-3, T-6): confirm dialogs, closes, /status,
/runtime, /log, /playbook. Pure functions returning aiogram ``formatting`` nodes."""

from __future__ import annotations

from aiogram.utils.formatting import Bold, Pre, Text, as_key_value, as_line, as_list, as_marked_section

from bot.render import plain, utc
from trading.domain.playbooks import PLAYBOOKS, Playbook
from trading.domain.views import CloseResult, RuntimeInfo, Summary

CONFIRM_HINT = "Tap to confirm within 60 s."


def render_confirm(question: str) -> Text:
    """A confirm dialog's text."""
    return as_list(Bold(question), CONFIRM_HINT)


def render_closes(results: list[CloseResult], what: str) -> Text:
    """The closes sent by /close or /closeall (or that nothing was open)."""
    if not results:
        return Text(f"Nothing to close: no open position{what} (or its close is already on its way).")
    lines = [
        as_line(f"{r.symbol} {r.side.value.upper()} · bot {r.bot} · {plain(r.contracts)} contracts", end="")
        for r in results
    ]
    return as_marked_section(Bold("Close sent (reduce-only market):"), *lines)


def render_status(summary: Summary, halted: dict[str, str], feed_state: str) -> Text:
    """/status: trading state, halted bots and why, paused symbols, feed state."""
    state = summary.trading_state.value + (f" ({summary.state_reason})" if summary.state_reason else "")
    if feed_state.startswith("HALTED"):  # SPEC M-1: a failed database write stopped trading
        state = "HALTED (database write failed: no new entries)"
    halted_text = ", ".join(f"{bot} ({reason})" for bot, reason in halted.items()) or "none"
    return as_list(
        as_line(Bold("Status"), f" — {summary.mode.upper()}", end=""),
        as_key_value("Trading state", state),
        as_key_value("Halted bots", halted_text),
        as_key_value("Paused symbols", ", ".join(summary.paused_symbols) or "none"),
        as_key_value("Open positions", str(len(summary.positions))),
        as_key_value("Market feed", feed_state),
        as_key_value("Clock", f"{utc(summary.clock_ms)} UTC"),
    )


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h {rest // 60:02d}m {rest % 60:02d}s"


def render_runtime(info: RuntimeInfo) -> Text:
    """/runtime: uptime, mode, feed state and loop timings (SPEC T-2)."""
    if info.loop_avg_ms is None:
        timings = "no candle processed yet"
    else:
        timings = f"avg {info.loop_avg_ms:.3f} ms, max {info.loop_max_ms or 0:.3f} ms per candle step (last 1000)"
    return as_list(
        Bold("Runtime"),
        as_key_value("Uptime", _duration(info.uptime_s)),
        as_key_value("Mode", info.mode.upper()),
        as_key_value("Market feed", info.feed_state + (" — STALE" if info.feed_stale else "")),
        as_key_value("Engine clock", f"{utc(info.clock_ms)} UTC"),
        as_key_value("Symbols", str(len(info.symbols))),
        as_key_value("Open positions / orders", f"{info.open_positions} / {info.open_orders}"),
        as_key_value("Loop timings", timings),
    )


def render_log(lines: list[str], n: int, limit: int = 4096) -> list[Text]:
    """/log [n]: the last lines of the bot's log as preformatted blocks, one message each of
    at most ``limit`` UTF-16 units; the header shares the first message with the first lines
    (a long log never sends a header alone). A line longer than a message is cut (…)."""
    if not lines:
        return [Text("The log is empty.")]
    header = Bold(f"Last {len(lines)} of up to {n} log lines")
    room = limit - len(header) - 16  # every page has room for the header, the block and a margin
    pages: list[list[str]] = [[]]
    used = 0
    for line in lines:
        line = _cut(line, room)
        size = len(Text(line)) + 1  # the line and its newline
        if pages[-1] and used + size > room:
            pages.append([])
            used = 0
        pages[-1].append(line)
        used += size
    messages = [as_list(header, Pre("\n".join(pages[0])))]
    messages += [Text(Pre("\n".join(page))) for page in pages[1:]]
    return messages


def _cut(line: str, units: int) -> str:
    """``line`` shortened to at most ``units`` UTF-16 units (an ellipsis marks the cut)."""
    if len(Text(line)) <= units:
        return line
    line = line[: units - 1]  # code points never fewer than UTF-16 units
    while len(Text(line)) > units - 1:
        line = line[:-1]
    return line + "…"


def render_playbooks() -> Text:
    """/playbook: the incidents that have a playbook."""
    return as_list(
        Bold("Incident playbooks"),
        *(as_line(f"• {p.title} — /playbook {p.key}", end="") for p in PLAYBOOKS.values()),
    )


def render_playbook(playbook: Playbook) -> Text:
    """/playbook KEY: the numbered steps; steps with a safe action have a button below."""
    steps = [
        as_line(f"{i}. {step.text}", " [button]" if step.action else "", end="")
        for i, step in enumerate(playbook.steps, 1)
    ]
    return as_list(Bold(f"Playbook: {playbook.title}"), *steps)
