"""Chaos test of the live order path (issue 4 acceptance, issue 13 acceptance; SPEC O-2, O-4, O-5,
O-6, O-8, R-10, L-3).

Seeded random steps against the strict loopback fake Binance USDⓈ-M (tests/fake_binance.py) with
the real ccxt client, the real engine, the order gateway and a real SQLite file. Every step
moves simulated time by 250 ms — the bot's clock and the exchange's server time alike; the fake
moves to its next real candle at random; entries (market, or GTC limits at the last close that
fill or expire after 20 s, O-3) and closes are sent at random; faults are armed at random (5xx,
429 and 418 with Retry-After — the 418 an IP ban —, -1021, timeout after the order was accepted,
"accepted but not yet visible" for 1.5 s, partial fills, also on the REST candle reads); stops
trigger on real candles and on mark-price spikes, and triggered stops expire unfilled,
part-fill then expire, or hang TRIGGERING (issue 13); the venue cancels conditional orders on
its own after 53 s (Binance's demo environment); the market-data socket is dropped, refused or
silenced at random (S-2: the feed falls back to REST polling and switches back); stray orders of
ours that the bot does not know are planted on the exchange, and far-away limit orders of
another bot on the account; and the bot is killed at random mid-order (its in-flight task
cancelled, nothing flushed, every in-memory object dropped) and rebuilt from the SQLite file,
then reconciled (the daily canary runs after each start). Each step runs one pass of the live
loop: the candle feed (websocket or REST), then the supervisor's fill poll, stop checks,
reconciliation and the venue guard. The strategy never enters (its minimum score is out of
reach: the test sends its entries itself, and a paused symbol would refuse those too at the
order gate); its exits run on the candles.

Asserted throughout: no client order id is ever accepted twice by the exchange (a duplicated
order; Binance accepts an id again once its first order is no longer open), every exchange
position has a working stop of ours (waiting, or triggered and executing) within 2 s of
simulated time, after every reconciliation there is no orphan order (ours and cancellable on the
exchange but not tracked, or tracked but gone from the exchange) and local positions equal the
exchange's (a reconciliation that met an order the exchange does not show yet, or a market order
of ours still working whose fills may be unbooked, says so and runs again a second later: it is
checked then), the other bot's orders are never cancelled, and each bot process fed every candle to
the engine exactly once, in order, without a gap, whichever source brought it.

The loop, the invariants and the switches are shared with the OKX run (``tests/chaos_harness.py``,
``tests/test_chaos_okx.py``); this module holds Binance's venue (:class:`tests.chaos_harness.BinanceVenue`)
and what its run must have exercised. Switches: ``CHAOS_SEED``, ``CHAOS_STEPS`` (default 2,000; the
README's figures are for 10,000); ``CHAOS_DEBUG=<file>`` appends what the bot and the exchange held
whenever an invariant breaks; ``CHAOS_TRACE_FROM=<step>`` (with ``CHAOS_TRACE_FILE``,
``CHAOS_TRACE_LEVEL``) logs every step from there on.
"""

from __future__ import annotations

import os
from collections import Counter

from tests.chaos_harness import BinanceVenue, run_chaos

SEED = int(os.environ.get("CHAOS_SEED", "20250603"))
STEPS = int(os.environ.get("CHAOS_STEPS", "2000"))


async def test_chaos_no_duplicates_stops_in_time_no_orphans_state_matches(tmp_path):
    venue = BinanceVenue()
    chaos = await run_chaos(venue, tmp_path / "chaos.db", seed=SEED, steps=STEPS)
    fake = venue.fake
    limits = Counter(o.status for o in fake.venue.orders.values() if o.type == "LIMIT" and not o.reduce_only
                     and o.client_id.startswith(chaos.prefix))
    chaos.figures["limit_entries_filled"] = limits["FILLED"] + limits["PARTIALLY_FILLED"]
    chaos.figures["limit_entries_cancelled"] = limits["CANCELED"]
    chaos.figures["venue_cancels"] = fake.venue.venue_cancels
    chaos.figures["strays_cancelled_by_the_venue_first"] = sum(
        1 for a in fake.venue.algos.values() if "stray" in a.client_id and a.cancelled_by == "venue")
    algos = Counter(a.status for a in fake.venue.algos.values() if a.client_id.startswith(chaos.prefix))
    chaos.figures["conditional_orders_by_status"] = dict(algos)
    figures = dict(chaos.figures)
    faults = dict(fake.faults_injected)
    print(f"binance: {figures}, -4116 replies {fake.duplicate_rejections}, "
          f"requests during an IP ban {fake.requests_during_ban}")
    # The run exercised what it claims to.
    assert set(faults) == {"5xx", "429", "418", "-1021", "timeout_after_accept", "partial", "invisible",
                           "stop_expire", "stop_partial_expire", "stop_stuck", *venue.socket_faults}
    assert figures["venue_cancels"] > 0 and figures["mark_spikes"] > 0 and figures["foreign_orders_planted"] > 0
    assert figures["candles_by_websocket"] > 0 and figures["candles_by_rest"] > 0 and figures["feed_switches"] > 0
    assert figures["kills_mid_order"] >= 3 and figures["reconciliations_checked"] >= 20
    assert figures["limit_entries_filled"] > 0 and figures["limit_entries_cancelled"] > 0
    strays = [a for a in fake.venue.algos.values() if "stray" in a.client_id]
    by = Counter(a.cancelled_by for a in strays)
    assert len(strays) == figures["strays_planted"] > 0 and all(a.status == "CANCELED" for a in strays)
    assert by["user"] > 0 and by["user"] + by["venue"] == len(strays)  # the reconciliation's, or the venue's first
    assert len(fake.trades) >= 50
