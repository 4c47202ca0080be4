"""Incident playbooks (SPEC T-6): what to do when something goes wrong, step by step, with the
safe action a step can run from chat. Pure data; no I/O.

Actions: ``PAUSE_ALL`` (no new entries anywhere), ``CLOSE_SYMBOL`` (reduce-only market close of
one symbol, confirmed), ``REPLACE_STOPS`` (place missing stops again), ``RECONCILE`` (compare
local state with the exchange, SPEC O-5); for someone else on the account (issue 13)
``ADOPT_FOREIGN`` (the bot manages the foreign position, with a stop at once),
``IGNORE_FOREIGN`` (left alone, entries stay paused on it), ``CLOSE_FOREIGN`` (reduce-only
market close of the foreign position).
"""

from __future__ import annotations

from dataclasses import dataclass

SAFE_ACTIONS = ("PAUSE_ALL", "CLOSE_SYMBOL", "REPLACE_STOPS", "RECONCILE", "ADOPT_FOREIGN", "IGNORE_FOREIGN",
                "CLOSE_FOREIGN")


@dataclass(frozen=True, slots=True)
class Step:
    """One step: what the trader does or checks; ``action`` is the safe action a button runs
    ("" = a manual step)."""

    text: str
    action: str = ""


@dataclass(frozen=True, slots=True)
class Playbook:
    """An incident playbook: short key (used in /playbook KEY and in callback data), title, steps."""

    key: str
    title: str
    steps: tuple[Step, ...]


PLAYBOOKS: dict[str, Playbook] = {p.key: p for p in (
    Playbook("exchange_down", "Exchange down", (
        Step("Pause all entries so nothing new opens while the exchange is unreachable.", "PAUSE_ALL"),
        Step("Check the exchange status page and your network; the stops rest on the exchange."),
        Step("When it answers again, reconcile positions and orders with the exchange.", "RECONCILE"),
    )),
    Playbook("no_stop", "Position without stop", (
        Step("Place the stop-loss again for every position missing one.", "REPLACE_STOPS"),
        Step("If the stop cannot be placed, close the symbol at market (confirmed).", "CLOSE_SYMBOL"),
        Step("Pause entries until the cause is known.", "PAUSE_ALL"),
    )),
    Playbook("daily_loss", "Daily loss hit", (
        Step("Entries are stopped for the rest of the UTC day (R-3); keep them paused.", "PAUSE_ALL"),
        Step("Review /daily and /failstats before resuming tomorrow; resuming today asks to confirm."),
    )),
    Playbook("api_key_rejected", "API key rejected", (
        Step("Pause all entries: no order can be placed with a rejected key.", "PAUSE_ALL"),
        Step("Check the key's permissions (futures enabled, IP allow-list) and expiry on Binance."),
        Step("Restart the bot with the new key; state is reconciled at start (L-3).", "RECONCILE"),
    )),
    Playbook("ws_down", "Websocket down", (
        Step("Prices are stale: pause all entries.", "PAUSE_ALL"),
        Step("Check the network; the feed reconnects by itself. Stops rest on the exchange."),
        Step("Reconcile once prices move again.", "RECONCILE"),
    )),
    Playbook("balance_mismatch", "Balance mismatch", (
        Step("Pause all entries until local and exchange state agree.", "PAUSE_ALL"),
        Step("Reconcile positions, orders and balance with the exchange (O-5).", "RECONCILE"),
        Step("Check deposits, withdrawals, fees and funding for the difference."),
    )),
    Playbook("underperforming", "Strategy underperforming", (
        Step("Pause all entries: the recent trades miss the §11 minimum (M-1).", "PAUSE_ALL"),
        Step("Switch to the launch preset: set preset = \"launch\" in the trading config (--config) and "
             "restart — one position at 0.5 % risk, earning each step back (Z-5)."),
        Step("Run an optimization: /optimize NAME (a study file, e.g. optimize) and compare its "
             "out-of-sample report with the current config before applying it (D-2)."),
    )),
    Playbook("someone_else", "Someone else on the account", (
        Step("An order or a position on your symbols that no order of this bot explains (a second bot, a "
             "trade in the exchange's app). The bot has not touched it and paused entries on that symbol."),
        Step("Adopt: the bot manages the position as its own, with a stop-loss placed at once.", "ADOPT_FOREIGN"),
        Step("Ignore: leave it to whoever opened it; entries stay paused on that symbol.", "IGNORE_FOREIGN"),
        Step("Close it at market (reduce-only); orders of others are never cancelled by the bot.", "CLOSE_FOREIGN"),
    )),
    Playbook("stuck_order", "Stuck order", (
        Step("Reconcile: look the order up by client order id, never resend blindly.", "RECONCILE"),
        Step("If a position is left without a working order, close the symbol (confirmed).", "CLOSE_SYMBOL"),
    )),
)}


def find_playbook(text: str) -> Playbook | None:
    """The playbook whose key or title matches ``text`` (case-insensitive; spaces, dashes and
    underscores ignored), or None."""
    wanted = "".join(ch for ch in text.lower() if ch.isalnum())
    for playbook in PLAYBOOKS.values():
        names = (playbook.key, playbook.title)
        if any("".join(ch for ch in n.lower() if ch.isalnum()) == wanted for n in names):
            return playbook
    return None
