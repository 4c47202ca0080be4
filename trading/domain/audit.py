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
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any

from trading.domain.events import (
    AccountChanged,
    CommandIssued,
    EntryDecided,
    ExitDecided,
    FillBooked,
    OrderRefused,
    OrderUpdated,
    PositionChanged,
    ReconcileReported,
    RiskNotice,
    SignalEvaluated,
    SignalsBelowMinimum,
)
from trading.domain.models import Account, Fill, Order, OrderLeg, OrderStatus, Position

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
POSITION = "POSITION"
BALANCE = "BALANCE"
LEDGER_ACTIONS = (POSITION, BALANCE)
"""State records (SPEC A-1 ledger): the last version of each position and of the account that a
flush wrote, so ``audit verify`` can replay the ledger and compare the state tables."""
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


# json.dumps builds a new encoder on every call made with non-default options: these two are
# built once (the same options, so the same text).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_SCALAR = json.JSONEncoder(ensure_ascii=False).encode


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (see the module docstring)."""
    return _CANONICAL(plain(value))


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
    dumps = _dumps
    config = dumps(config_id)
    for entry in entries:
        seq += 1
        size = None if entry.size is None else str(entry.size)
        side = plain(entry.side)
        why_json = canonical_json(entry.why)
        # canonical_json(body()) written out key by key (sorted): ``why_json`` is canonical
        # already, so it is not parsed and encoded again (AuditRecord.computed_hash checks it).
        body = (f'{{"action":{dumps(entry.action)},"bot":{dumps(entry.bot)},"config_id":{config},'
                f'"prev_hash":{dumps(prev)},"seq":{seq},"side":{dumps(side)},"size":{dumps(size)},'
                f'"symbol":{dumps(entry.symbol)},"ts":{int(entry.ts)},"why":{why_json}}}')
        digest = sha256_hex(body)
        records.append(AuditRecord(seq, entry.ts, entry.action, entry.bot, entry.symbol, side,
                                   size, why_json, config_id, prev, digest))
        prev = digest
    return records


def _dumps(value: Any) -> str:
    """JSON of one scalar as :func:`canonical_json` writes it."""
    return _SCALAR(value)


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
    kind: str = "chain"
    """What failed: "chain" (a record edited, deleted, moved; the head marker), "anchor" (an
    outside anchor ``--head SEQ:HASH`` disagrees: cut or rewritten) or "ledger" (the state
    tables differ from what the records say)."""
    head_seq: int = 0
    """seq of the last good record (0 when empty): with ``head_hash`` the anchor to keep."""


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (as the build card, the shutdown message and the daily report show it) →
    (seq, lowercase hash or hash prefix of at least 16 hex digits).

    Raises:
        ValueError: not ``SEQ:HASH`` with a positive seq and 16–64 hex digits.
    """
    seq_text, sep, digest = text.strip().partition(":")
    digest = digest.strip().lower().rstrip("…").rstrip(".")
    if not sep or not seq_text.strip().isdigit() or int(seq_text) < 1:
        raise ValueError(f"--head must be SEQ:HASH (e.g. 1234:9f86d081884c7d65…), not {text[:80]!r}")
    if not 16 <= len(digest) <= 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"--head {text[:80]!r}: the hash must be 16 to 64 hex digits")
    return int(seq_text), digest


def verify(records: Iterable[AuditRecord], head_marker: tuple[int, str] | None = None,
           anchors: Sequence[tuple[int, str]] = (), *, marker_required: bool = False) -> Verification:
    """Check the chain of ``records`` in storage order (SPEC A-1 ``audit verify``).

    Args:
        records: every stored record, in the order they were written (rowid order).
        head_marker: (seq, hash) the log last wrote as its head, if kept: it must name the last
            record exactly (a log whose last record is older has lost its tail; a marker that
            names another record was rewritten).
        anchors: (seq, hash or hash prefix) heads seen outside the file (build card, shutdown
            message, daily report): the record with that seq must exist and have that hash, or
            the chain was cut or rewritten since — even when it was recomputed from scratch.
        marker_required: a non-empty log without a head marker is broken (the marker was deleted).
    """
    records = list(records)
    result = _verify_chain(records, head_marker, marker_required)
    if not result.ok:
        return result
    by_seq = {r.seq: r.hash for r in records}
    for seq, digest in anchors:
        stored = by_seq.get(seq)
        if stored is None:
            return Verification(False, result.count, result.head_hash, seq,
                                f"record seq {seq} named by the anchor {seq}:{digest[:16]}… is missing: the chain "
                                f"ends at seq {result.head_seq} (cut after the anchor was taken)", "anchor",
                                result.head_seq)
        if not stored.startswith(digest):
            return Verification(False, result.count, result.head_hash, seq,
                                f"record seq {seq} has hash {stored[:16]}…, the anchor says {digest[:16]}…: the chain "
                                "was rewritten since the anchor was taken (recomputed hashes do not help)", "anchor",
                                result.head_seq)
    return result


def _verify_chain(records: list[AuditRecord], head_marker: tuple[int, str] | None,
                  marker_required: bool) -> Verification:
    expected_seq, prev, count = 1, GENESIS, 0
    for record in records:
        if record.seq != expected_seq:
            what = (f"seq {expected_seq} was deleted or the records were reordered" if record.seq > expected_seq
                    else f"seq {record.seq} is repeated or the records were reordered")
            return Verification(False, count, prev, record.seq,
                                f"record seq {record.seq} found where seq {expected_seq} was expected: {what}",
                                head_seq=expected_seq - 1)
        if record.prev_hash != prev:
            return Verification(False, count, prev, record.seq,
                                f"record seq {record.seq}: prev_hash {record.prev_hash[:12]}… does not match "
                                f"the previous record's hash {prev[:12]}… (a record before it was changed, "
                                "removed or inserted)", head_seq=expected_seq - 1)
        try:
            actual = record.computed_hash()
        except (ValueError, TypeError) as exc:
            return Verification(False, count, prev, record.seq, f"record seq {record.seq}: unreadable ({exc})",
                                head_seq=expected_seq - 1)
        if actual != record.hash:
            return Verification(False, count, prev, record.seq,
                                f"record seq {record.seq}: content does not match its hash (edited): "
                                f"stored {record.hash[:12]}…, computed {actual[:12]}…", head_seq=expected_seq - 1)
        prev, count, expected_seq = record.hash, count + 1, expected_seq + 1
    last = expected_seq - 1
    if head_marker is None:
        if marker_required and count:
            return Verification(False, count, prev, last, f"the head marker is missing (it names the last record, "
                                f"seq {last}): it was deleted", "chain", last)
        return Verification(True, count, prev, head_seq=last)
    marker_seq, marker_hash = head_marker
    if marker_seq > last:
        return Verification(False, count, prev, expected_seq,
                            f"records from seq {expected_seq} to {marker_seq} are missing (the log's "
                            f"head marker says seq {marker_seq}): the tail was deleted", "chain", last)
    if marker_seq < last or (marker_seq > 0 and marker_hash != prev):
        return Verification(False, count, prev, marker_seq or last,
                            f"the head marker says {marker_seq}:{marker_hash[:12]}… but the last record is "
                            f"{last}:{prev[:12]}…: the marker or the tail was rewritten", "chain", last)
    return Verification(True, count, prev, head_seq=last)


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
    every exit decision, manual command, reconciliation report and order-gate refusal (O-9). An
    entry order's ORDER_PLACED record follows the RISK_ALLOWED decision that sent it. The batch's
    state ends it: a POSITION record with the last version of each position it changed and a
    BALANCE record with the account it left (the ledger ``audit verify`` replays). Equity
    samples, signals under the minimum score, risk counters are not recorded."""
    out: list[AuditEntry] = []
    last_entry_order: dict[tuple[str, str], Any] = {}
    details: dict[str, EntryDecided] = {}
    held: dict[str, AuditEntry] = {}  # entry orders placed, waiting for their decision record
    positions: dict[str, Position] = {}  # last version of each position in this batch
    account: Account | None = None
    for event in events:
        kind = type(event)
        if kind is EntryDecided:
            details[event.client_order_id] = event
        elif kind is OrderUpdated:
            o = event.order
            if o.leg is OrderLeg.ENTRY and o.status is OrderStatus.OPEN:
                last_entry_order[(o.bot, o.symbol)] = o
            why = {"client_order_id": o.client_order_id, "leg": o.leg, "type": o.type,
                   "reduce_only": o.reduce_only, "status": o.status, "filled": o.filled, "price": o.price}
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
        elif kind is SignalsBelowMinimum:
            if record_below_min_score:
                out.extend(_denied(e) for e in event.evaluations)
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
                out.append(_denied(e))
                continue
            out.append(AuditEntry(e.timestamp, RISK_ALLOWED, e.bot, e.symbol, e.side.value, size, why))
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
        elif kind is PositionChanged:
            positions[event.position.position_id] = event.position
        elif kind is AccountChanged:
            account = event.account
    out.extend(held.values())  # an entry without its decision in this batch still gets recorded
    # SPEC A-1 ledger: the state this batch leaves (the persister writes the same last versions).
    last_ts = max((e.ts for e in out), default=None)
    for position in positions.values():
        ts = position.closed_ms or last_ts or position.last_addition_ms or position.opened_ms
        out.append(AuditEntry(ts, POSITION, position.bot, position.symbol, position.side.value, position.contracts,
                              position_state(position)))
    if account is not None:
        out.append(AuditEntry(account.updated_ms, BALANCE, why=balance_state(account)))
    return out


def _denied(e) -> AuditEntry:
    """The RISK_DENIED record of a refused signal evaluation (S-13): score, minimum, components
    and the first check that blocked it."""
    return AuditEntry(e.timestamp, RISK_DENIED, e.bot, e.symbol, e.side.value, None,
                      {"score": e.score, "min_score": e.min_score, "components": e.components,
                       "first_blocker": e.blocked_by})


def position_state(position: Position) -> dict:
    """Every column of a position as plain JSON values (the POSITION record's ``why``)."""
    return plain(asdict(position))


def balance_state(account: Account) -> dict:
    """The account's balance and peak equity (quote) as plain values (the BALANCE record's
    ``why``); ``updated_ms`` is left out: it moves without the money moving."""
    return {"balance": plain(account.balance), "peak_equity": plain(account.peak_equity)}


# ---------------------------------------------------------------- ledger replay (SPEC A-1)
@dataclass(frozen=True, slots=True)
class LedgerProblem:
    """A state table that disagrees with the audit: ``seq`` of the record it was checked
    against (None for a row no record holds) and ``problem`` in words."""

    seq: int | None
    problem: str


_FILL_FIELDS = ("client_order_id", "bot", "symbol", "side", "leg", "amount", "price", "fee", "timestamp")


def _fill_key(fill: Fill) -> tuple:
    return tuple(plain(getattr(fill, name)) for name in _FILL_FIELDS)


def _fill_key_of(record: AuditRecord) -> tuple:
    why = record.why
    return (why.get("client_order_id"), record.bot, record.symbol, record.side, why.get("leg"), record.size,
            why.get("price"), why.get("fee"), record.ts)


def check_ledger(records: Sequence[AuditRecord], *, orders: Sequence[Order], fills: Sequence[Fill],
                 positions: Sequence[Position], account: Account | None) -> LedgerProblem | None:
    """Replay the ledger from the audit records and compare the state tables with it (SPEC
    A-1): the first disagreement, or None.

    * fills — every FILL record is one row of the fills table with the same order, side, leg,
      amount, price, fee and time, and no row is missing from the records;
    * orders — each order's status, size, filled amount, average and prices are those of its
      last ORDER_* record; an order without any record is accepted only while it is open (the
      gateway stores it before sending, SPEC O-2, and its record follows);
    * positions — each row equals its last POSITION record, column for column;
    * balance — the account's balance and peak equity are those of the last BALANCE record.

    Files written before the ledger records existed (no POSITION/BALANCE record yet) are checked
    for fills and orders only, and positions closed before the first ledger record are not
    checked (they have no record to compare with).
    """
    audited_fills: dict[tuple, list[int]] = {}
    last_order: dict[str, AuditRecord] = {}
    placed_size: dict[str, str | None] = {}
    last_position: dict[str, AuditRecord] = {}
    last_balance: AuditRecord | None = None
    ledger_start: int | None = None
    for record in records:
        action = record.action
        if action == FILL:
            audited_fills.setdefault(_fill_key_of(record), []).append(record.seq)
        elif action.startswith("ORDER_"):
            cid = record.why.get("client_order_id")
            last_order[cid] = record
            if action != ORDER_ACTIONS[OrderStatus.CLOSED]:
                placed_size[cid] = record.size
        elif action == POSITION:
            last_position[record.why.get("position_id")] = record
            ledger_start = record.ts if ledger_start is None else ledger_start
        elif action == BALANCE:
            last_balance = record
            ledger_start = record.ts if ledger_start is None else ledger_start

    # fills
    for fill in fills:
        key = _fill_key(fill)
        seqs = audited_fills.get(key)
        if not seqs:
            return LedgerProblem(None, f"fills table: a fill of {fill.client_order_id} ({plain(fill.amount)} @ "
                                       f"{plain(fill.price)}, fee {plain(fill.fee)}) is in no FILL record "
                                       "(inserted or edited without the audit)")
        seqs.pop(0)
    for key, seqs in audited_fills.items():
        if seqs:
            return LedgerProblem(seqs[0], f"record seq {seqs[0]}: FILL of {key[0]} ({key[5]} @ {key[6]}) is missing "
                                          "from the fills table (deleted or edited without the audit)")

    # orders
    table_orders = {o.client_order_id: o for o in orders}
    for cid, record in last_order.items():
        order = table_orders.get(cid)
        if order is None:
            return LedgerProblem(record.seq, f"record seq {record.seq}: order {cid} is missing from the orders table")
        problem = _order_difference(order, record, placed_size.get(cid))
        if problem:
            return LedgerProblem(record.seq, f"orders table: {cid} {problem} (record seq {record.seq}): "
                                             "edited without the audit")
    for cid, order in table_orders.items():
        if cid not in last_order and order.status is not OrderStatus.OPEN:
            return LedgerProblem(None, f"orders table: {cid} ({order.status.value}) is in no audit record "
                                       "(inserted without the audit)")

    # positions
    table_positions = {p.position_id: p for p in positions}
    for position_id, record in last_position.items():
        position = table_positions.get(position_id)
        if position is None:
            return LedgerProblem(record.seq, f"record seq {record.seq}: position {position_id} is missing from "
                                             "the positions table (deleted without the audit)")
        state = position_state(position)
        for name, audited in record.why.items():
            if state.get(name) != audited:
                return LedgerProblem(record.seq, f"positions table: {position_id} {name} is {state.get(name)}, "
                                                 f"the audit says {audited} (record seq {record.seq}): "
                                                 "edited without the audit")
    if ledger_start is not None:
        for position_id, position in table_positions.items():
            legacy = position.closed_ms is not None and position.closed_ms < ledger_start
            if position_id not in last_position and not legacy:
                return LedgerProblem(None, f"positions table: {position_id} is in no POSITION record "
                                           "(inserted without the audit)")

    # balance
    if last_balance is not None:
        if account is None:
            return LedgerProblem(last_balance.seq, f"record seq {last_balance.seq}: the account row is missing")
        state = balance_state(account)
        for name, audited in last_balance.why.items():
            if state.get(name) != audited:
                return LedgerProblem(last_balance.seq, f"account: {name} is {state.get(name)}, the audit says "
                                                       f"{audited} (record seq {last_balance.seq}): edited without "
                                                       "the audit")
    return None


def _order_difference(order: Order, record: AuditRecord, placed_size: str | None) -> str:
    """What differs between a stored order and its last audit record ("" when nothing)."""
    why = record.why
    expected = {"bot": record.bot, "symbol": record.symbol, "side": record.side, "leg": why.get("leg"),
                "type": why.get("type"), "reduce_only": why.get("reduce_only"), "status": why.get("status"),
                "trigger_price": why.get("trigger_price"), "average": why.get("average"),
                "reason": why.get("reason", "")}
    if order.status is OrderStatus.CLOSED:
        expected["filled"] = record.size
    elif "filled" in why:
        expected["filled"] = why["filled"]
    if order.status is not OrderStatus.CLOSED:
        expected["amount"] = record.size
    elif placed_size is not None:
        expected["amount"] = placed_size
    if "price" in why:
        expected["price"] = why["price"]
    actual = plain({name: getattr(order, name) for name in expected})
    for name, value in expected.items():
        if actual[name] != value:
            return f"{name} is {actual[name]}, the audit says {value}"
    return ""
