"""Versioned schema migrations (STYLE: mautrix/python's aiosqlite layer).

``MIGRATIONS[i]`` is the SQL script that takes a database from ``PRAGMA user_version`` ``i`` to
``i + 1``; :meth:`storage.db.Database.open` runs each pending step in the same transaction that
bumps the version. Steps are append-only: never edit a released step, add a new one.

Column conventions: Decimal values (quote currency, contracts, prices) are TEXT holding
``str(Decimal)`` so they round-trip exactly (a ``DECIMAL`` column would come back as REAL);
enums hold their ``.value``; booleans are 0/1; times are INTEGER epoch ms UTC.
"""

from __future__ import annotations

V1_INITIAL = """
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    bot             TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    type            TEXT NOT NULL,
    leg             TEXT NOT NULL,
    amount          TEXT NOT NULL,
    reduce_only     INTEGER NOT NULL CHECK (reduce_only IN (0, 1)),
    created_ms      INTEGER NOT NULL,
    status          TEXT NOT NULL,
    trigger_price   TEXT,
    filled          TEXT NOT NULL,
    average         TEXT,
    updated_ms      INTEGER NOT NULL,
    reason          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX ix_orders_status ON orders (status, bot, symbol);

CREATE TABLE fills (
    id              INTEGER PRIMARY KEY,
    client_order_id TEXT NOT NULL,
    bot             TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    leg             TEXT NOT NULL,
    amount          TEXT NOT NULL,
    price           TEXT NOT NULL,
    fee             TEXT NOT NULL,
    timestamp       INTEGER NOT NULL
);
CREATE INDEX ix_fills_timestamp ON fills (timestamp);
CREATE INDEX ix_fills_symbol_timestamp ON fills (symbol, timestamp);

CREATE TABLE positions (
    position_id       TEXT PRIMARY KEY,
    bot               TEXT NOT NULL,
    symbol            TEXT NOT NULL,
    side              TEXT NOT NULL,
    contracts         TEXT NOT NULL,
    initial_contracts TEXT NOT NULL,
    entry_price       TEXT NOT NULL,
    opened_ms         INTEGER NOT NULL,
    stop_loss         TEXT NOT NULL,
    take_profit_1     TEXT NOT NULL,
    take_profit_2     TEXT NOT NULL,
    leverage          INTEGER NOT NULL,
    tp1_done          INTEGER NOT NULL CHECK (tp1_done IN (0, 1)),
    realised_pnl      TEXT NOT NULL,
    fees              TEXT NOT NULL,
    funding           TEXT NOT NULL,
    closed_ms         INTEGER,            -- NULL while open
    exit_price        TEXT,
    exit_reason       TEXT
);
CREATE INDEX ix_positions_closed_ms ON positions (closed_ms);
CREATE INDEX ix_positions_open_bot ON positions (bot) WHERE closed_ms IS NULL;

CREATE TABLE equity_snapshots (
    id        INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    balance   TEXT NOT NULL,
    equity    TEXT NOT NULL
);
CREATE INDEX ix_equity_snapshots_timestamp ON equity_snapshots (timestamp);

CREATE TABLE signals (
    id         INTEGER PRIMARY KEY,
    timestamp  INTEGER NOT NULL,
    bot        TEXT NOT NULL,
    symbol     TEXT NOT NULL,
    side       TEXT NOT NULL,
    score      REAL NOT NULL,
    passed     INTEGER NOT NULL CHECK (passed IN (0, 1)),
    blocked_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX ix_signals_timestamp ON signals (timestamp);
CREATE INDEX ix_signals_bot_timestamp ON signals (bot, timestamp);

CREATE TABLE risk_state (
    bot              TEXT PRIMARY KEY,
    day              TEXT NOT NULL,
    day_start_equity TEXT NOT NULL,
    sl_streak        INTEGER NOT NULL,
    realised_today   TEXT NOT NULL,
    trades_today     INTEGER NOT NULL,
    halted_reason    TEXT NOT NULL DEFAULT ''
);

CREATE TABLE paused_symbols (
    bot       TEXT NOT NULL,
    symbol    TEXT NOT NULL,
    paused_ms INTEGER NOT NULL,
    PRIMARY KEY (bot, symbol)
);

CREATE TABLE account (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    balance     TEXT NOT NULL,
    peak_equity TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE runtime (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

V2_SIGNAL_ANALYTICS = """
-- SPEC S-13 analytics: the score each signal needed and the conditions it met. Rows written
-- before this step keep min_score 0 and no components (their threshold is unknown).
ALTER TABLE signals ADD COLUMN min_score REAL NOT NULL DEFAULT 0;
ALTER TABLE signals ADD COLUMN components TEXT NOT NULL DEFAULT '';  -- comma-joined, '' = none
-- /blockers, /near and /topmissed filter on the blocker; /signalstats and /failstats group by symbol.
CREATE INDEX ix_signals_blocked_by_timestamp ON signals (blocked_by, timestamp);
CREATE INDEX ix_signals_symbol_timestamp ON signals (symbol, timestamp);
"""

V3_RISK_AND_EXITS = """
-- SPEC E-1 ATR mode (TP3), E-2 stepwise steps, E-10 ladder additions on positions.
ALTER TABLE positions ADD COLUMN take_profit_3 TEXT;
ALTER TABLE positions ADD COLUMN steps_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN additions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE positions ADD COLUMN last_addition_ms INTEGER;
-- SPEC R-4: today's gross profit and loss per bot (profit factor).
ALTER TABLE risk_state ADD COLUMN gross_profit_today TEXT NOT NULL DEFAULT '0';
ALTER TABLE risk_state ADD COLUMN gross_loss_today TEXT NOT NULL DEFAULT '0';
-- SPEC R-6: stop-losses per bot and symbol, and the block they set.
CREATE TABLE symbol_blacklist (
    bot              TEXT NOT NULL,
    symbol           TEXT NOT NULL,
    stop_losses      INTEGER NOT NULL,
    blocked_until_ms INTEGER,
    PRIMARY KEY (bot, symbol)
);
"""

V4_AUDIT = """
-- SPEC A-1: append-only audit records chained by sha256 (canonical form: trading/domain/audit.py).
-- id is the storage order (rowid); verification walks it and checks seq, prev_hash and hash.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL UNIQUE,    -- 1, 2, ... without gaps
    ts        INTEGER NOT NULL,           -- epoch ms UTC of the decision (engine clock)
    action    TEXT NOT NULL,              -- ORDER_PLACED, FILL, RISK_ALLOWED, EXIT, COMMAND...
    bot       TEXT NOT NULL,
    symbol    TEXT NOT NULL,
    side      TEXT NOT NULL,
    size      TEXT,                       -- contracts, str(Decimal), NULL when none
    why       TEXT NOT NULL,              -- canonical JSON of the rationale
    config_id TEXT NOT NULL,              -- config_snapshots.id in force
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX ix_audit_ts ON audit (ts);
-- Defence in depth: the table refuses edits and deletions (verification still detects them
-- when someone drops these triggers first).
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only (SPEC A-1)');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only (SPEC A-1)');
END;
-- The trading config each record ran under, stored once: id = sha256 of its canonical JSON.
CREATE TABLE config_snapshots (
    id         TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE TRIGGER config_snapshots_no_update BEFORE UPDATE ON config_snapshots
BEGIN
    SELECT RAISE(ABORT, 'config snapshots are append-only (SPEC A-1)');
END;
CREATE TRIGGER config_snapshots_no_delete BEFORE DELETE ON config_snapshots
BEGIN
    SELECT RAISE(ABORT, 'config snapshots are append-only (SPEC A-1)');
END;
"""


V5_CHAT_CONFIRMATIONS_AND_INCIDENTS = """
-- SPEC T-1, T-3: a dangerous action waiting for its inline confirm. Callback data carries only
-- the id (Telegram caps it at 64 bytes); the action and its argument live here until used or
-- expired (epoch ms UTC, wall clock).
CREATE TABLE confirmations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL,
    action      TEXT NOT NULL,
    argument    TEXT NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    used_ms     INTEGER
);
-- SPEC M-1: one row per monitor incident; open while closed_ms is NULL, so a restart does not
-- alert again for an incident already reported.
CREATE TABLE incidents (
    key         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    playbook    TEXT NOT NULL,
    text        TEXT NOT NULL,
    opened_ms   INTEGER NOT NULL,
    closed_ms   INTEGER
);
"""

V6_NOTIFICATION_OUTBOX = """
-- SPEC T-4: critical notifications (stop-loss, risk stop, monitor alert, shutdown, crash) are
-- written here before they are sent and deleted once Telegram accepted them; a restart sends
-- what is left. body is Telegram HTML, already escaped and at most 4096 characters.
CREATE TABLE notification_outbox (
    id          INTEGER PRIMARY KEY,
    chat_id     INTEGER NOT NULL,
    category    TEXT NOT NULL,
    body        TEXT NOT NULL,
    silent      INTEGER NOT NULL CHECK (silent IN (0, 1)),
    markup      TEXT,               -- inline keyboard JSON (e.g. a playbook button), NULL = none
    created_ms  INTEGER NOT NULL
);
"""

V7_LIMIT_PRICE = """
-- SPEC O-3 limit entries: the limit price of a LIMIT order (Decimal as TEXT); NULL otherwise.
ALTER TABLE orders ADD COLUMN price TEXT;
"""

V8_AUDIT_BY_ACTION = """
-- SPEC A-1 ledger: the last BALANCE / POSITION record and the EXIT / RISK_ALLOWED records of
-- orders in flight are found by action without reading the whole log (at start, every flush).
CREATE INDEX ix_audit_action ON audit (action);
"""

MIGRATIONS: tuple[str, ...] = (
    V1_INITIAL, V2_SIGNAL_ANALYTICS, V3_RISK_AND_EXITS, V4_AUDIT, V5_CHAT_CONFIRMATIONS_AND_INCIDENTS,
    V6_NOTIFICATION_OUTBOX, V7_LIMIT_PRICE, V8_AUDIT_BY_ACTION,
)
"""Every step in order; step ``i`` upgrades user_version ``i`` → ``i + 1``."""

SCHEMA_VERSION: int = len(MIGRATIONS)
"""The schema version this code writes and understands (``PRAGMA user_version``)."""
