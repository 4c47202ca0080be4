"""SPEC O-2 client order ids valid on both venues (issue 18): letters and digits only, at most 32
characters (OKX ``clOrdId`` / ``algoClOrdId``), still deterministic, the leg read back from the id,
and the ids of an older version (with dashes) still recognised (O-5 strays, S-7 demo record)."""

from __future__ import annotations

import itertools
import re

import pytest

from trading.domain.models import OrderLeg, Side
from trading.domain.oms import (
    client_order_id_prefix,
    client_order_id_prefixes,
    leg_of,
    legacy_client_order_id,
    make_client_order_id,
    regenerated_client_order_id,
)

OKX_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
BINANCE_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
LEGS = ["entry", "sl", "sl.1", "sl.12", "sl.123", "tp1", "tp1.1", "tp2.7", "tp3", "tp1.10", "add", "close"]
EXPECTED = {"entry": OrderLeg.ENTRY, "sl": OrderLeg.STOP_LOSS, "tp1": OrderLeg.TP1, "tp2": OrderLeg.TP2,
            "tp3": OrderLeg.TP3, "add": OrderLeg.ADD, "close": OrderLeg.CLOSE}


@pytest.mark.parametrize("env,bot", [("demo", "xrp"), ("live", "OptiScalp A"), ("paper", "a"),
                                     ("demo", "Ω-bot with a very long name"), ("live", "")])
def test_o2_ids_are_valid_on_okx_and_binance_and_deterministic(env, bot):
    for leg, side in itertools.product(LEGS, Side):
        cid = make_client_order_id(env, bot, "XRP/USDT:USDT", side, "intent|42", leg)
        assert OKX_ID.match(cid) and BINANCE_ID.match(cid), cid
        assert len(cid) <= 30
        assert cid == make_client_order_id(env, bot, "XRP/USDT:USDT", side, "intent|42", leg)  # a retry reuses it
        assert cid.startswith(client_order_id_prefix(env, bot))
        assert leg_of(cid) is EXPECTED[leg.split(".")[0]]


def test_o2_ids_differ_by_every_part_of_the_intent():
    base = ("demo", "a", "XRP/USDT:USDT", Side.LONG, "i1", "sl")
    ids = {make_client_order_id(*base)}
    for i, other in enumerate(["live", "b", "BTC/USDT:USDT", Side.SHORT, "i2", "sl.1"]):
        ids.add(make_client_order_id(*base[:i], other, *base[i + 1:]))
    assert len(ids) == 7


def test_o5_b1_bots_whose_names_start_alike_get_distinct_prefixes():
    """B-1's "OptiScalp A" and "OptiScalp B" shared the prefix ``ofdOptiSc-`` before issue 18; now
    no bot's prefix is a prefix of another's (fixed length, hashed)."""
    names = ["OptiScalp A", "OptiScalp B", "OptiScalp C", "micro-swing", "a", "ab", "abc"]
    prefixes = [client_order_id_prefix("demo", n) for n in names]
    assert len(set(prefixes)) == len(names)
    assert len({len(p) for p in prefixes}) == 1
    for p, q in itertools.permutations(prefixes, 2):
        assert not q.startswith(p)


def test_o5_s7_ids_of_an_older_version_are_still_ours():
    old = legacy_client_order_id("demo", "xrp", "XRP/USDT:USDT", Side.LONG, "i1", "sl.1")
    assert old.startswith("ofdxrp-") and old.endswith("-sl1")
    assert old.startswith(client_order_id_prefixes("demo", "xrp"))
    assert leg_of(old) is OrderLeg.STOP_LOSS
    assert leg_of(legacy_client_order_id("demo", "xrp", "XRP/USDT:USDT", Side.LONG, "i1", "close")) is OrderLeg.CLOSE
    # The digest part is the same sha1 as before: only the layout changed.
    new = make_client_order_id("demo", "xrp", "XRP/USDT:USDT", Side.LONG, "i1", "sl.1")
    assert old.split("-")[1] in new


def test_o2_a_foreign_id_reads_as_no_leg_of_ours():
    assert leg_of("e847386590ce4dBC1234567890abcdef") is OrderLeg.ENTRY
    assert leg_of("web_123") is OrderLeg.ENTRY


@pytest.mark.parametrize("leg", LEGS)
def test_o2_a_renewed_id_keeps_prefix_and_leg_is_deterministic_and_new(leg):
    """Issue 18: a stop whose id OKX refuses as used before (51016) is sent under the next
    generation of its id — valid on both venues, the same bot prefix (O-5 finds it) and leg,
    deterministic (a retry reuses it), different from every earlier generation."""
    cid = make_client_order_id("demo", "OptiScalp A", "XRP/USDT:USDT", Side.LONG, "i1", leg)
    chain = [cid]
    for _ in range(4):
        chain.append(regenerated_client_order_id(chain[-1]))
    assert len(set(chain)) == len(chain)
    for renewed in chain[1:]:
        assert OKX_ID.match(renewed) and BINANCE_ID.match(renewed) and len(renewed) == len(cid)
        assert renewed.startswith(client_order_id_prefix("demo", "OptiScalp A"))
        assert leg_of(renewed) is leg_of(cid)
    assert regenerated_client_order_id(cid) == chain[1]
    legacy = legacy_client_order_id("demo", "xrp", "XRP/USDT:USDT", Side.LONG, "i1", leg)
    assert regenerated_client_order_id(legacy) is None and regenerated_client_order_id("otherbot1") is None
