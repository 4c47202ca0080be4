"""The exact requests ccxt builds on OKX (issue 18, SPEC O-2, O-3, O-7), with no network: the ccxt
client's ``fetch`` records each request instead of sending it.

1. ccxt's own static request fixtures for okx (a verbatim subset of
   ``ts/src/test/static/request/okx.json`` in the ccxt repository, in
   ``tests/fixtures/okx_ccxt_requests.json`` with its commit): the installed ccxt must still build
   them exactly (``clOrdId`` and ``tag`` skipped, as the fixture says) — conditional stop-loss and
   take-profit algo orders, cancel by ``algoClOrdId``, set-leverage with ``mgnMode``, positions,
   position mode. A ccxt upgrade that changes any of them fails here first.
2. OptiFlow's own requests (``tests/fixtures/okx_requests.json``, same format): market and limit
   entries and the reduce-only close under our ``clOrdId`` with ``tdMode`` isolated; the
   stop-loss as a conditional algo with ``slOrdPx`` -1 and ``slTriggerPxType`` mark under
   ``algoClOrdId``; take-profits market (``tpOrdPx`` -1) and limit (at the target); look-up,
   listing and cancel by ``algoClOrdId``; leverage per margin mode. No Binance parameter.

Regenerate (2) after a deliberate change: ``UPDATE_REQUEST_FIXTURES=1 pytest tests/test_okx_request_fixtures.py``
and read the diff against OKX's docs before committing it.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import ccxt.async_support as ccxt_async
import pytest

from tests.fake_okx import INSTRUMENTS, Instrument
from trading.adapters.ccxt_exchange import CcxtExchange
from trading.domain.models import OrderLeg, Side
from trading.domain.oms import bracket_order, close_order, entry_order

HERE = Path(__file__).parent / "fixtures"
CCXT_FIXTURE = HERE / "okx_ccxt_requests.json"
OUR_FIXTURE = HERE / "okx_requests.json"
XRP = "XRP/USDT:USDT"
BINANCE_ONLY = {"workingType", "priceProtect", "timeInForce", "stopPrice", "newClientOrderId", "clientAlgoId",
                "positionSide", "closePosition"}


def _rows() -> list[dict]:
    rows = []
    for base, spec in INSTRUMENTS.items():
        inst = Instrument(f"{base}-USDT-SWAP", f"{base}/USDT:USDT", base, Decimal(spec["ctVal"]), Decimal(spec["lotSz"]),
                          Decimal(spec["minSz"]), Decimal(spec["tickSz"]), int(spec["lever"]))
        rows.append(inst.row())
    return rows


def _canned(method: str, url: str, body: str | None) -> dict:
    path = urlsplit(url).path
    sent = json.loads(body) if body else {}
    first = sent[0] if isinstance(sent, list) and sent else sent if isinstance(sent, dict) else {}
    data: list = []
    if path.endswith("/trade/batch-orders") or path.endswith("/trade/order") and method == "POST":
        data = [{"clOrdId": first.get("clOrdId", ""), "ordId": "1", "sCode": "0", "sMsg": "", "tag": ""}]
    elif path.endswith("/trade/order-algo") and method == "POST":
        data = [{"algoId": "2", "algoClOrdId": first.get("algoClOrdId", ""), "clOrdId": "", "sCode": "0", "sMsg": ""}]
    elif path.endswith("/trade/order-algo"):
        query = dict(parse_qsl(urlsplit(url).query))
        data = [{"instType": "SWAP", "instId": query.get("instId", "XRP-USDT-SWAP"), "algoId": "2",
                 "algoClOrdId": query.get("algoClOrdId", ""), "clOrdId": "", "ordType": "conditional", "side": "sell",
                 "posSide": "net", "tdMode": "isolated", "sz": "1", "state": "live", "slTriggerPx": "2",
                 "slOrdPx": "-1", "slTriggerPxType": "mark", "reduceOnly": "true", "cTime": "1", "uTime": "1",
                 "ordId": "", "ordIdList": []}]
    elif path.endswith("/trade/cancel-algos"):
        data = [{"algoId": "2", "algoClOrdId": first.get("algoClOrdId", ""), "sCode": "0", "sMsg": ""}]
    elif path.endswith("/account/set-leverage"):
        data = [first]
    elif path.endswith("/account/config"):
        data = [{"uid": "1", "posMode": "net_mode", "acctLv": "2", "perm": "read_only,trade"}]
    return {"code": "0", "msg": "", "data": data}


class Recorder:
    """Replaces the ccxt client's ``fetch``: records (method, url, body), answers canned JSON."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []

    async def fetch(self, url, method="GET", headers=None, body=None):
        """ccxt's transport: record the request, answer canned JSON (nothing is sent)."""
        self.requests.append((method, url, body))
        return _canned(method, url, body)


def _without(value, skip: set):
    if isinstance(value, list):
        return [_without(v, skip) for v in value]
    if isinstance(value, dict):
        return {k: _without(v, skip) for k, v in value.items() if k not in skip}
    return value


def _same_url(got: str, want: str) -> bool:
    g, w = urlsplit(got), urlsplit(want)
    return (g.netloc, g.path) == (w.netloc, w.path) and sorted(parse_qsl(g.query)) == sorted(parse_qsl(w.query))


def _ccxt_cases() -> list[tuple[str, dict]]:
    doc = json.loads(CCXT_FIXTURE.read_text())
    return [(name, case) for name, cases in doc["methods"].items() for case in cases]


@pytest.mark.parametrize("name,case", _ccxt_cases(), ids=lambda x: x if isinstance(x, str) else x["description"])
async def test_o3_o7_installed_ccxt_builds_okx_requests_as_its_own_fixtures(name, case):
    skip = set(json.loads(CCXT_FIXTURE.read_text())["skipKeys"])
    client = ccxt_async.okx({"apiKey": "k", "secret": "s", "password": "p"})
    recorder = Recorder()
    client.fetch = recorder.fetch
    try:
        client.set_markets(client.parse_markets(_rows()))
        method = getattr(client, "".join("_" + c.lower() if c.isupper() else c for c in case["method"]))
        await method(*case["input"])
        _method, url, body = recorder.requests[-1]
        assert _same_url(url, case["url"]), (url, case["url"])
        if "output" in case and case["output"] is not None:
            assert _without(json.loads(body), skip) == _without(json.loads(case["output"]), skip)
    finally:
        await client.close()


async def _capture() -> dict:
    """Every OKX order path of the adapter against the recorder; the fixture document."""
    adapter = CcxtExchange(exchange_id="okx", mode="live", api_key="fixture-key", secret="fixture-secret",
                           password="fixturePass1", stop_working_type="MARK_PRICE", margin_mode="isolated")
    recorder = Recorder()
    adapter.client.fetch = recorder.fetch
    adapter.client.set_markets(adapter.client.parse_markets(_rows()))
    await adapter.load_markets()
    market = adapter.market(XRP)
    cases: list[tuple[str, str, object]] = []

    async def run(description: str, coro) -> None:
        before = len(recorder.requests)
        await coro
        for method, url, body in recorder.requests[before:]:
            cases.append((description, f"{method} {url}", json.loads(body) if body else None))

    common = {"env": "live", "bot": "main", "symbol": XRP, "side": Side.LONG, "intent_id": "main|XRP|1", "now_ms": 1}
    entry = entry_order(contracts=Decimal("1.5"), **common)
    limit = entry_order(contracts=Decimal("1.5"), limit_price=Decimal("2.1"), **{**common, "intent_id": "main|XRP|2"})
    bracket = {"env": "live", "bot": "main", "market": market, "side": Side.LONG, "intent_id": "main|XRP|1", "generation": 0, "now_ms": 1}
    stop = bracket_order(leg=OrderLeg.STOP_LOSS, contracts=Decimal("1.5"), trigger_price=Decimal("2.05"), **bracket)
    tp1 = bracket_order(leg=OrderLeg.TP1, contracts=Decimal("1.2"), trigger_price=Decimal("2.2"), **bracket)
    tp2 = bracket_order(leg=OrderLeg.TP2, contracts=Decimal("0.3"), trigger_price=Decimal("2.3"),
                        tp_order_style="limit", **bracket)
    close = close_order(contracts=Decimal("1.5"), **{**common, "intent_id": "main|XRP|close"})
    await run("leverage 5x for isolated margin (O-7): set-leverage with mgnMode, posSide net",
              adapter.set_leverage(XRP, 5))
    await run("market entry (O-3) under our clOrdId, tdMode isolated", adapter.create_order(entry))
    await run("limit entry (O-3) at its price", adapter.create_order(limit))
    await run("stop-loss (O-3): conditional algo, slOrdPx -1 (market), trigger type mark, algoClOrdId",
              adapter.create_order(stop))
    await run("take-profit market: conditional algo, tpOrdPx -1", adapter.create_order(tp1))
    await run("take-profit limit (tp_order_style limit): tpOrdPx at the target", adapter.create_order(tp2))
    await run("reduce-only market close", adapter.create_order(close))
    await run("look-up of the stop by algoClOrdId (O-2)", adapter.fetch_order(stop.client_order_id, XRP))
    await run("open orders: plain, then conditional algo orders", adapter.fetch_open_orders(XRP))
    await run("cancel of the stop by algoClOrdId", adapter.cancel_order(stop.client_order_id, XRP))
    await adapter.close()
    methods: dict[str, list] = {}
    for description, target, body in cases:
        method, url = target.split(" ", 1)
        methods.setdefault("requests", []).append({"description": description, "httpMethod": method, "url": url,
                                                   "output": body})
    return {"exchange": "okx", "skipKeys": ["clOrdId", "tag"], "note": "clOrdId/tag skipped only where ccxt makes "
            "them up (algo orders); ours are compared in input order below", "methods": methods}


async def test_o2_o3_o7_optiflow_okx_requests_equal_the_golden_ones():
    doc = await _capture()
    if os.environ.get("UPDATE_REQUEST_FIXTURES"):
        OUR_FIXTURE.write_text(json.dumps(doc, indent=2) + "\n")
    golden = json.loads(OUR_FIXTURE.read_text())
    got, want = doc["methods"]["requests"], golden["methods"]["requests"]
    assert [r["description"] for r in got] == [r["description"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert (g["httpMethod"], g["url"]) == (w["httpMethod"], w["url"]), g["description"]
        body_g, body_w = g["output"], w["output"]
        algo = "order-algo" in g["url"] and g["httpMethod"] == "POST"
        skip = {"clOrdId", "tag"} if algo else set()  # ccxt invents a clOrdId and tag for algo orders
        assert _without(body_g, skip) == _without(body_w, skip), g["description"]


async def test_o3_no_binance_parameter_and_only_valid_ids_in_any_okx_body():
    import re

    doc = await _capture()
    for request in doc["methods"]["requests"]:
        rows = request["output"] if isinstance(request["output"], list) else [request["output"] or {}]
        for row in rows:
            assert not BINANCE_ONLY & set(row), request["description"]
            for key in ("clOrdId", "algoClOrdId"):
                if key in row:
                    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", row[key]), (key, row[key])
            if row.get("ordType") == "conditional":
                assert row["tdMode"] == "isolated" and row["reduceOnly"] is True and row["algoClOrdId"]
                assert row.get("slOrdPx", row.get("tpOrdPx")) is not None
