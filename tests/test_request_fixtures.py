"""The exact requests ccxt builds for OptiFlow's orders on Binance USDⓈ-M (issue 13): the adapter
runs against a ccxt client whose ``fetch`` records every request instead of sending it (markets
from the bundled dump, no network), and each request — minus ``timestamp``, ``signature`` and
``recvWindow`` — must equal the golden one in ``tests/fixtures/binanceusdm_requests.json``, kept
in the format of ccxt's own static request fixtures (``ts/src/test/static/request/
binanceusdm.json`` in the ccxt repository: ``methods`` → method → ``description``, ``method``,
``url``, ``input``, ``output``).

Covered: market and limit entry (O-3), stop-loss STOP_MARKET with MARK_PRICE and price
protection, TAKE_PROFIT_MARKET and TAKE_PROFIT (limit at the target) — all on the algo endpoint
with ``clientAlgoId`` (Binance since 2025-12-09), cancel and fetch by client id (plain and
conditional, O-2), leverage, margin mode (O-7) and positions (O-5). A changed ccxt that builds
any of them differently fails here before it reaches the exchange.

Regenerate after a deliberate change: ``UPDATE_REQUEST_FIXTURES=1 pytest tests/test_request_fixtures.py``
(then read the diff against Binance's docs before committing it).
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from trading.adapters.ccxt_exchange import CcxtExchange
from trading.adapters.marketdata import default_data_dir, load_ccxt_markets, market_from_ccxt
from trading.domain.models import OrderLeg, Side
from trading.domain.oms import bracket_order, entry_order

FIXTURE = Path(__file__).parent / "fixtures" / "binanceusdm_requests.json"
SKIP = ("timestamp", "signature", "recvWindow")
XRP = "XRP/USDT:USDT"


def _canned(method: str, url: str, body: str | None) -> object:
    """A plausible Binance answer for each request, so the adapter goes on (only the requests
    are compared)."""
    path = urlsplit(url).path
    params = dict(parse_qsl(urlsplit(url).query)) | dict(parse_qsl(body or ""))
    if path.endswith("/algoOrder"):
        return {"algoId": 1, "clientAlgoId": params.get("clientAlgoId", "x"), "algoType": "CONDITIONAL",
                "orderType": params.get("type", "STOP_MARKET"), "symbol": "XRPUSDT", "side": params.get("side", "SELL"),
                "positionSide": "BOTH", "timeInForce": "GTC", "quantity": params.get("quantity", "1"),
                "algoStatus": "CANCELED" if method == "DELETE" else "NEW", "actualOrderId": "", "actualPrice": "0",
                "triggerPrice": params.get("triggerPrice", "1"), "price": params.get("price", "0"),
                "workingType": "MARK_PRICE", "priceProtect": False, "reduceOnly": True, "closePosition": False,
                "createTime": 1, "updateTime": 1, "triggerTime": 0, "goodTillDate": 0, "code": "200", "msg": "success"}
    if path.endswith("/order"):
        return {"orderId": 2, "clientOrderId": params.get("newClientOrderId") or params.get("origClientOrderId", "x"),
                "symbol": "XRPUSDT", "status": "CANCELED" if method == "DELETE" else "NEW",
                "side": params.get("side", "BUY"), "type": params.get("type", "MARKET"), "origQty": params.get("quantity", "1"),
                "executedQty": "0", "avgPrice": "0", "cumQuote": "0", "price": params.get("price", "0"),
                "reduceOnly": params.get("reduceOnly") == "true", "timeInForce": "GTC", "positionSide": "BOTH",
                "stopPrice": "0", "workingType": "CONTRACT_PRICE", "origType": params.get("type", "MARKET"),
                "time": 1, "updateTime": 1}
    if path.endswith("/leverage"):
        return {"leverage": int(params.get("leverage", 1)), "maxNotionalValue": "1000000", "symbol": "XRPUSDT"}
    if path.endswith("/marginType"):
        return {"code": 200, "msg": "success"}
    if path.endswith("/leverageBracket"):
        return [{"symbol": "XRPUSDT", "brackets": [{"bracket": 1, "initialLeverage": 75, "notionalCap": 10000,
                                                    "notionalFloor": 0, "maintMarginRatio": 0.005, "cum": 0}]}]
    return []


class Recorder:
    """Replaces the ccxt client's ``fetch``: records (method, url, body) and answers canned JSON."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []

    async def fetch(self, url, method="GET", headers=None, body=None):
        """ccxt's transport: record the request, answer canned JSON (nothing is sent)."""
        self.requests.append((method, url, body))
        return _canned(method, url, body)


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _strip(url: str, body: str | None) -> tuple[str, str | None]:
    """``url`` and ``body`` without the volatile keys (ccxt fixtures' ``skipKeys``)."""
    parts = urlsplit(url)
    query = "&".join(f"{k}={v}" for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in SKIP)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    kept = None if body is None else "&".join(
        f"{k}={v}" for k, v in parse_qsl(body, keep_blank_values=True) if k not in SKIP)
    return (f"{base}?{query}" if query else base), kept


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


async def _capture() -> dict:
    """Run every order path of the adapter against the recorder; the fixture document."""
    adapter = CcxtExchange(mode="demo", api_key="fixture-key", secret="fixture-secret", stop_working_type="MARK_PRICE")
    recorder = Recorder()
    adapter.client.fetch = recorder.fetch
    dump = load_ccxt_markets(default_data_dir())
    adapter.client.set_markets(dump)
    await adapter.load_markets()
    market = market_from_ccxt(dump[XRP])
    calls: list[tuple[str, str, list]] = []
    original = adapter._call

    async def call(method, *args, **kwargs):
        calls.append((method, "", _plain(list(args))))
        return await original(method, *args, **kwargs)

    adapter._call = call  # type: ignore[method-assign]
    entry = entry_order(env="demo", bot="fx", symbol=XRP, side=Side.LONG, intent_id="fixture", contracts=Decimal("10"),
                        now_ms=0)
    limit = entry_order(env="demo", bot="fx", symbol=XRP, side=Side.LONG, intent_id="fixture-limit",
                        contracts=Decimal("10"), now_ms=0, limit_price=Decimal("2.1500"))

    def bracket(leg: OrderLeg, trigger: str, style: str = "market"):
        return bracket_order(env="demo", bot="fx", market=market, side=Side.LONG, intent_id="fixture", leg=leg,
                             generation=0, contracts=Decimal("10"), trigger_price=Decimal(trigger), now_ms=0,
                             tp_order_style=style)

    stop = bracket(OrderLeg.STOP_LOSS, "2.1000")
    tp_market = bracket(OrderLeg.TP1, "2.2500")
    tp_limit = bracket(OrderLeg.TP2, "2.3000", "limit")
    steps = [
        ("createOrder", "market entry (O-3): MARKET, newOrderRespType RESULT, our client id",
         lambda: adapter.create_order(entry)),
        ("createOrder", "limit entry (O-3): LIMIT GTC at the price", lambda: adapter.create_order(limit)),
        ("createOrder", "stop-loss: STOP_MARKET on the algo endpoint, reduce-only, MARK_PRICE, price protection",
         lambda: adapter.create_order(stop)),
        ("createOrder", "take-profit (market): TAKE_PROFIT_MARKET on the algo endpoint, reduce-only",
         lambda: adapter.create_order(tp_market)),
        ("createOrder", "take-profit (limit): TAKE_PROFIT on the algo endpoint, price = triggerPrice, GTC, reduce-only",
         lambda: adapter.create_order(tp_limit)),
        ("fetchOrder", "fetch a plain order by client id (origClientOrderId)",
         lambda: adapter.fetch_order(entry.client_order_id, XRP)),
        ("fetchOrder", "fetch a conditional order by client id (clientAlgoId)",
         lambda: adapter.fetch_order(stop.client_order_id, XRP)),
        ("cancelOrder", "cancel a plain order by client id", lambda: adapter.cancel_order(limit.client_order_id, XRP)),
        ("cancelOrder", "cancel a conditional order by client id",
         lambda: adapter.cancel_order(stop.client_order_id, XRP)),
        ("setLeverage", "leverage per symbol (O-7)", lambda: adapter.set_leverage(XRP, 5)),
        ("setMarginMode", "isolated margin per symbol (O-7)", lambda: adapter.set_margin_mode(XRP, "isolated")),
        ("fetchPositions", "positions (O-5): positionRisk v3", lambda: adapter.fetch_positions()),
    ]
    methods: dict[str, list] = {}
    try:
        for name, description, run in steps:
            first_request, first_call = len(recorder.requests), len(calls)
            await run()
            [(method, _, args)] = [c for c in calls[first_call:] if _camel(c[0]) == name][:1]
            for verb, url, body in recorder.requests[first_request:]:
                if "leverageBracket" in url:
                    continue  # ccxt's own one-off read before the first positions query
                stripped_url, stripped_body = _strip(url, body)
                methods.setdefault(name, []).append({
                    "description": description, "method": name, "url": stripped_url, "input": args,
                    "output": stripped_body, "httpMethod": verb,
                })
    finally:
        await adapter.close()
    return {"exchange": "binanceusdm", "skipKeys": list(SKIP), "options": {"demo": True}, "methods": methods,
            "outputType": "both"}


def _normal(entry: dict) -> tuple:
    parts = urlsplit(entry["url"])
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    body = dict(parse_qsl(entry["output"] or "", keep_blank_values=True))
    return entry["httpMethod"], f"{parts.netloc}{parts.path}", query, body, json.dumps(entry["input"], sort_keys=True)


async def test_o2_o3_o5_o7_ccxt_builds_the_golden_binance_requests():
    """O-2, O-3, O-5, O-7: every request of the order path equals its golden fixture (minus
    timestamp, signature and recvWindow); conditional orders go to /fapi/v1/algoOrder with
    ``algoType=CONDITIONAL`` and ``clientAlgoId``, never to /fapi/v1/order (-4120)."""
    document = await _capture()
    if os.environ.get("UPDATE_REQUEST_FIXTURES"):
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(document, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    golden = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert golden["exchange"] == "binanceusdm" and golden["skipKeys"] == list(SKIP)
    assert sorted(document["methods"]) == sorted(golden["methods"])
    for name, entries in golden["methods"].items():
        got = document["methods"][name]
        assert [e["description"] for e in got] == [e["description"] for e in entries], name
        for mine, theirs in zip(got, entries, strict=True):
            assert _normal(mine) == _normal(theirs), (name, mine["description"])
    conditional = [e for e in document["methods"]["createOrder"] if e["input"][1] in
                   ("STOP_MARKET", "TAKE_PROFIT_MARKET", "TAKE_PROFIT")]
    assert len(conditional) == 3
    for entry in conditional:
        body = dict(parse_qsl(entry["output"]))
        assert entry["url"].endswith("/fapi/v1/algoOrder") and body["algoType"] == "CONDITIONAL"
        assert re.fullmatch(r"[\.A-Z\:/a-z0-9_-]{1,36}", body["clientAlgoId"]) and body["reduceOnly"] == "true"
