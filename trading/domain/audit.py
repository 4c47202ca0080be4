"""Audit trail with a sha256 hash chain (SPEC A-1): canonical form, hashing, decision records
from the engine's events, and verification. Pure: no SQLite, no aiogram (storage lives in
``storage.repositories.AuditRepository``).

Canonical form of a record (what is hashed)
-------------------------------------------
The hash of a record is ``sha256(canonical_json(body)).hexdigest()`` (64 lowercase hex digits)
where ``body`` is the object with exactly these keys::

    {"action", "bot", "config_id", "prev_hash", "seq", "side", "size", "symbol", "ts", "why"}

``canonical_json`` is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` encoded as UTF-8, after :func:`plain` has turned every
``Decimal`` into its ``str()`` (``"0.010"`` keeps its exponent), every float into the ``str`` of
``Decimal(repr(x))`` (so no float ever reaches the JSON), every Enum into its ``.value`` and
every tuple into a list. ``seq`` (1, 2, …) and ``ts`` (epoch ms UTC) are integers, ``size``
is a decimal string or null, ``why`` an object. The first record's ``prev_hash`` is
:data:`GENESIS` (64 zeros); every later record's ``prev_hash`` is the previous record's hash.

Verification walks the records in storage order and names the first broken one: a sequence
gap or a repeat (a record deleted or moved), a ``prev_hash`` that is not the previous hash
(a record deleted, inserted or moved), a hash that does not match the body (a record edited),
or a head marker that is ahead of the last record (the tail was cut off).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

from trading.domain.events import (
    CommandIssued,
    EntryDecided,
    ExitDecided,
    FillBooked,
    OrderRefused,
    OrderUpdated,
    ReconcileReported,
    RiskNotice,
    SignalEvaluated,
)
from trading.domain.models import OrderLeg, OrderStatus

GENESIS = "0" * 64
"""``prev_hash`` of the first record."""

BODY_KEYS = ("action", "bot", "config_id", "prev_hash", "seq", "side", "size", "symbol", "ts", "why")

# Actions (UPPER_SNAKE). ORDER_* follow the order's life cycle; RISK_* are entry decisions.
ORDER_ACTIONS = {
    OrderStatus.OPEN: "ORDER_PLACED",
    OrderStatus.CLOSED: "ORDER_FILLED",
    OrderStatus.CANCELED: "ORDER_CANCELED",
    OrderStatus.REJECTED: "ORDER_REJECTED",
}
FILL = "FILL"
RISK_ALLOWED = "RISK_ALLOWED"
RISK_DENIED = "RISK_DENIED"
EXIT = "EXIT"
COMMAND = "COMMAND"
RECONCILE = "RECONCILE"
ORDER_REFUSED = "ORDER_REFUSED"  # the order gate kept an order that adds exposure from the venue (O-9)
ENTRY_CHECKS = ("score", "risk_guard", "sizing", "filters", "order_gate", "exchange")
"""The entry pipeline's stages in order (SPEC S-11, Z-4, R-*, Z-1, F-*, O-3): an allowed entry
passed all of them; a denied one names its first blocker."""
SCORE_BELOW_MIN = "SCORE_BELOW_MIN"


def plain(value: Any) -> Any:
    """``value`` with Decimals → str, floats → str(Decimal(repr(x))), Enums → value, tuples →
    lists, recursively (dict keys must be str). Raises TypeError for other types."""
    if value is None or isinstance(value, (bool, int, str)):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return str(Decimal(repr(value)))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} in an audit record")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (see the module docstring)."""
    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    """sha256 of the UTF-8 bytes of ``text``, 64 lowercase hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_snapshot_id(config_json: dict) -> str:
    """Id of a trading config snapshot: sha256 of its canonical JSON (``model_dump(mode="json")``)."""
    return sha256_hex(canonical_json(config_json))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record before it is chained: ``ts`` epoch ms UTC; ``size`` in contracts (or None);
    ``why`` the rationale (plain JSON values after :func:`plain`)."""

    ts: int
    action: str
    bot: str = ""
    symbol: str = ""
    side: str = ""
    size: Decimal | None = None
    why: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A chained audit record as stored (SPEC A-1). ``why_json`` is the canonical JSON of the
    rationale; ``size`` a decimal string or None."""

    seq: int
    ts: int
    action: str
    bot: str
    symbol: str
    side: str
    size: str | None
    why_json: str
    config_id: str
    prev_hash: str
    hash: str

    def body(self) -> dict:
        """The object whose canonical JSON is hashed."""
        return {
            "action": self.action, "bot": self.bot, "config_id": self.config_id,
            "prev_hash": self.prev_hash, "seq": self.seq, "side": self.side, "size": self.size,
            "symbol": self.symbol, "ts": self.ts, "why": json.loads(self.why_json),
        }

    def computed_hash(self) -> str:
        """The hash this record's body should have."""
        return sha256_hex(canonical_json(self.body()))

    @property
    def why(self) -> dict:
        """The rationale as a dict."""
        return json.loads(self.why_json)

    def as_json(self) -> str:
        """One JSONL line for export: the body plus its hash, canonical."""
        return canonical_json({**self.body(), "hash": self.hash})


def chain(entries: Iterable[AuditEntry], *, head_seq: int, head_hash: str, config_id: str) -> list[AuditRecord]:
    """Chain ``entries`` after the head (seq, hash) — (0, GENESIS) for an empty log."""
    records = []
    seq, prev = head_seq, head_hash
    for entry in entries:
        seq += 1
        size = None if entry.size is None else str(entry.size)
        why_json = canonical_json(entry.why)
        body = {
            "action": entry.action, "bot": entry.bot, "config_id": config_id, "prev_hash": prev,
            "seq": seq, "side": plain(entry.side), "size": size, "symbol": entry.symbol, "ts": entry.ts,
            "why": json.loads(why_json),
        }
        digest = sha256_hex(canonical_json(body))
        records.append(AuditRecord(seq, entry.ts, entry.action, entry.bot, entry.symbol, plain(entry.side),
                                   size, why_json, config_id, prev, digest))
        prev = digest
    return records


@dataclass(frozen=True, slots=True)
class Verification:
    """Result of :func:`verify`: ``ok``; ``count`` records checked; ``head_hash`` of the last good
    record (GENESIS when empty); when broken, ``broken_seq`` (the seq of the first bad record, as
    stored, or the expected one) and ``problem`` in words."""

    ok: bool
    count: int
    head_hash: str
    broken_seq: int | None = None
    problem: str = ""


def verify(records: Iterable[AuditRecord], head_marker: tuple[int, str] | None = None) -> Verification:
    """Check the chain of ``records`` in storage order (SPEC A-1 ``audit verify``).

    Args:
        records: every stored record, in the order they were written (rowid order).
        head_marker: (seq, hash) the log last wrote as its head, if kept; a log whose last
            record is older than the marker has lost its tail.
    """
    expected_seq, prev, count = 1, GENESIS, 0
    for record in records:
        if record.seq != expected_seq:
            what = (f"seq {expected_seq} was deleted or the records were reordered" if record.seq > expected_seq
                    else f"seq {record.seq} is repeated or the records were reordered")
            return Verification(False, count, prev, record.seq,
                                f"record seq {record.seq} found where seq {expected_seq} was expected: {what}")
        if record.prev_hash != prev:
            return Verification(False, count, prev, record.seq,
                                f"record seq {record.seq}: prev_hash {record.prev_hash[:12]}… does not match "
                                f"the previous record's hash {prev[:12]}… (a record before it was changed, "
                                "removed or inserted)")
        try:
            actual = record.computed_hash()
        except (ValueError, TypeError) as exc:
            return Verification(False, count, prev, record.seq, f"record seq {record.seq}: unreadable ({exc})")
        if actual != record.hash:
            return Verification(False, count, prev, record.seq,
                                f"record seq {record.seq}: content does not match its hash (edited): "
                                f"stored {record.hash[:12]}…, computed {actual[:12]}…")
        prev, count, expected_seq = record.hash, count + 1, expected_seq + 1
    if head_marker is not None:
        marker_seq, marker_hash = head_marker
        if marker_seq >= expected_seq:
            return Verification(False, count, prev, expected_seq,
                                f"records from seq {expected_seq} to {marker_seq} are missing (the log's "
                                f"head marker says seq {marker_seq}): the tail was deleted")
        if marker_seq == expected_seq - 1 and marker_seq > 0 and marker_hash != prev:
            return Verification(False, count, prev, marker_seq,
                                f"record seq {marker_seq}: hash differs from the head marker")
    return Verification(True, count, prev)


@dataclass(frozen=True, slots=True)
class AuditStatus:
    """What /audit shows: the chain's verification and the newest records, oldest first."""

    verification: Verification
    last: tuple[AuditRecord, ...]


# ---------------------------------------------------------------- decision records from events
def entries_for_events(events: Sequence, *, record_below_min_score: bool = False) -> list[AuditEntry]:
    """The audit entries of a flush's events, in event order (SPEC A-1): every order state
    change, every fill, every risk decision on a signal that met its minimum score (signals
    under the score never reach the risk checks; ``record_below_min_score`` records them too),
    every exit decision, manual command, reconciliation report and order-gate refusal (O-9). An entry order's
    ORDER_PLACED record follows the RISK_ALLOWED decision that sent it. Other events (positions,
    account, equity samples…) are state, not decisions: they are not recorded."""
    out: list[AuditEntry] = []
    last_entry_order: dict[tuple[str, str], Any] = {}
    details: dict[str, EntryDecided] = {}
    held: dict[str, AuditEntry] = {}  # entry orders placed, waiting for their decision record
    for event in events:
        kind = type(event)
        if kind is EntryDecided:
            details[event.client_order_id] = event
        elif kind is OrderUpdated:
            o = event.order
            if o.leg is OrderLeg.ENTRY and o.status is OrderStatus.OPEN:
                last_entry_order[(o.bot, o.symbol)] = o
            why = {"client_order_id": o.client_order_id, "leg": o.leg, "type": o.type,
                   "reduce_only": o.reduce_only, "status": o.status}
            if o.trigger_price is not None:
                why["trigger_price"] = o.trigger_price
            if o.average is not None:
                why["average"] = o.average
            if o.reason:
                why["reason"] = o.reason
            entry = AuditEntry(o.updated_ms or o.created_ms, ORDER_ACTIONS[o.status], o.bot, o.symbol,
                               o.side.value, o.filled if o.status is OrderStatus.CLOSED else o.amount, why)
            if o.leg is OrderLeg.ENTRY and o.status is OrderStatus.OPEN:
                held[o.client_order_id] = entry  # written after its RISK_ALLOWED decision
            else:
                out.append(entry)
        elif kind is FillBooked:
            f = event.fill
            out.append(AuditEntry(f.timestamp, FILL, f.bot, f.symbol, f.side.value, f.amount,
                                  {"client_order_id": f.client_order_id, "leg": f.leg, "price": f.price,
                                   "fee": f.fee}))
        elif kind is SignalEvaluated:
            e = event.evaluation
            if e.blocked_by == SCORE_BELOW_MIN and not record_below_min_score:
                continue
            why = {"score": e.score, "min_score": e.min_score, "components": e.components}
            size = None
            if e.passed:
                why["checks_passed"] = ENTRY_CHECKS
                order = last_entry_order.pop((e.bot, e.symbol), None)
                if order is not None and order.created_ms == e.timestamp:
                    size = order.amount
                    why["client_order_id"] = order.client_order_id
                    decided = details.pop(order.client_order_id, None)
                    if decided is not None:  # what the brackets will use at the fill (restart, L-3)
                        why.update(tp1_share_pct=decided.tp1_share_pct, atr=decided.atr, leverage=decided.leverage)
            else:
                why["first_blocker"] = e.blocked_by
            out.append(AuditEntry(e.timestamp, RISK_ALLOWED if e.passed else RISK_DENIED, e.bot, e.symbol,
                                  e.side.value, size, why))
            if e.passed and "client_order_id" in why:
                placed = held.pop(why["client_order_id"], None)
                if placed is not None:
                    out.append(placed)
        elif kind is ExitDecided:
            why = {"reason": event.reason, "position_id": event.position_id, **event.why}
            if event.client_order_id:
                why["client_order_id"] = event.client_order_id
            out.append(AuditEntry(event.ts, EXIT, event.bot, event.symbol, event.side, event.contracts, why))
        elif kind is CommandIssued:
            out.append(AuditEntry(event.ts, COMMAND, event.bot, event.symbol, "", None,
                                  {"command": event.command, "source": event.source, **event.why}))
        elif kind is ReconcileReported:
            out.append(AuditEntry(event.ts, RECONCILE, "", "", "", None, event.report))
        elif kind is RiskNotice:  # Z-5: account-level risk steps
            out.append(AuditEntry(event.ts, event.action, event.bot, event.symbol, "", None,
                                  {"text": event.text, **event.why}))
        elif kind is OrderRefused:
            o = event.order
            out.append(AuditEntry(event.ts, ORDER_REFUSED, o.bot, o.symbol, o.side.value, o.amount,
                                  {"client_order_id": o.client_order_id, "leg": o.leg, "type": o.type,
                                   "reason": event.reason, "detail": event.detail}))
    out.extend(held.values())  # an entry without its decision in this batch still gets recorded
    return out
