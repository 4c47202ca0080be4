"""/audit → Telegram text (SPEC A-1): the verification result and the newest records."""

from __future__ import annotations

from aiogram.utils.formatting import Bold, Code, Text, as_line, as_list

from bot.render import utc
from trading.domain.audit import AuditRecord, AuditStatus

_WHY_KEYS = ("reason", "first_blocker", "score", "command", "leg", "price", "trigger_price", "status")


def _why(record: AuditRecord) -> str:
    """A short rationale: the most telling fields of ``why`` (full record: optiflow audit export)."""
    why = record.why
    parts = [f"{key}={why[key]}" for key in _WHY_KEYS if key in why and why[key] not in ("", None)]
    return ", ".join(parts[:3])


def render_audit(status: AuditStatus) -> Text:
    """The chain check (OK with count and head hash, or the first broken record) and the
    newest records: seq, time UTC, action, bot, symbol, side, size, short why."""
    check = status.verification
    if check.ok:
        head = as_line("✅ Audit chain OK — ", f"{check.count} records, head ",
                       Code(f"{check.head_seq}:{check.head_hash[:16]}"), " · ledger matches", end="")
    elif check.kind == "ledger":  # SPEC A-1: state edited without the audit
        head = as_line("❌ State tables do not match the audit: ", check.problem, end="")
    else:
        head = as_line(f"❌ Audit chain BROKEN at seq {check.broken_seq}: ", check.problem, end="")
    if not status.last:
        return as_list(head, "No audit records yet.")
    lines = []
    for r in status.last:
        size = f" {r.size}" if r.size else ""
        parts = " ".join(p for p in (r.bot, r.symbol, r.side) if p)
        why = _why(r)
        lines.append(f"#{r.seq} {utc(r.ts)} {r.action} {parts}{size}" + (f" — {why}" if why else ""))
    return as_list(head, Bold("Last records"), *lines)


def render_anchor(seq: int, digest: str) -> Text:
    """The audit head as an anchor outside the file (SPEC A-1: build card, shutdown message,
    daily report): ``SEQ:HASH`` in full, ready for ``optiflow audit verify --head SEQ:HASH``."""
    return Text("🔗 Audit head ", Code(f"{seq}:{digest}"))
