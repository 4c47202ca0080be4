"""The real exchange behind ``trading.ports.ExchangePort``: ccxt's async client (SPEC S-1, S-3, S-4).

One ccxt instance per process (ccxt manual): ``load_markets()`` once, ``close()`` on shutdown,
``enableRateLimit`` on, ``maxRetriesOnFailure`` 0 (retries are ours, SPEC O-4, in
``trading.adapters.order_gateway``). Symbols are ccxt unified symbols; amounts are contracts
(notional = contracts × contractSize × price, contractSize is ctVal on OKX). ccxt errors are mapped
to ``trading.domain.errors`` types at this boundary, in the order STYLE.md gives: OrderNotFound before
InvalidOrder; RateLimitExceeded and DDoSProtection both become :class:`RateLimited`;
InsufficientFunds is a business rejection. Secrets never appear in messages.

OKX (issue 18) is spoken to as :mod:`trading.adapters.okx` says: ``tdMode`` on every order, leverage
per margin mode, stop-losses and take-profits as ``conditional`` algo orders under ``algoClOrdId``
(looked up, listed and cancelled by it), the demo header ``x-simulated-trading: 1`` (ccxt's sandbox
mode), the passphrase as ccxt's ``password``, the balance from ``cashBal``.

Binance USDⓈ-M conditional orders (STOP_MARKET, TAKE_PROFIT_MARKET, TAKE_PROFIT) go through Binance's algo
order service (ccxt ≥ 4.5.27 routes them there by the trigger price and can fetch and cancel
them; :func:`check_ccxt_version` refuses older ones at start); this adapter remembers which
client order ids are conditional so it can look them up and cancel them on the right endpoint.
A conditional order is open while the algo service holds it NEW; once triggered it becomes an
order of its own in the matching engine (``actualOrderId``) and its outcome is read there: filled,
part-filled then expired, expired or cancelled — a dead stop is never reported as resting
(issue 13 defect 1, SPEC R-10).

The balance is the wallet balance (realised), read from Binance's account (``walletBalance``;
``totalWalletBalance`` in multi-assets mode), never ccxt's ``total`` which is the margin balance
and already holds the unrealised PnL the engine adds itself (defect 3). API keys never reach a
log: every ccxt client we build logs through :data:`CCXT_LOG`, whose filter masks them (ccxt
prints request headers, ``X-MBX-APIKEY`` included, at DEBUG; defect 8).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

import ccxt.async_support as ccxt_async
from ccxt.base import errors as ccxt_errors

from trading.domain.errors import (
    AuthenticationFailed,
    ConfigError,
    DuplicateClientOrderId,
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    RequestTimedOut,
    TimestampOutOfSync,
    UnknownSymbol,
)
from trading.adapters import okx
from trading.adapters.marketdata import market_from_ccxt
from trading.domain.models import Candle, Market, Order, OrderLeg, OrderSide, OrderStatus, OrderType
from trading.domain.oms import leg_of

log = logging.getLogger(__name__)

Mode = Literal["demo", "live"]
EXCHANGE_IDS = {"binanceusdm": "binanceusdm", "binance": "binanceusdm", "okx": "okx"}
_STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.CLOSED, "canceled": OrderStatus.CANCELED,
           "expired": OrderStatus.REJECTED, "rejected": OrderStatus.REJECTED}
_BUSINESS_CODES = ("-2019", "-2021", "-2022", "-4164", "-1111", "-4003", "-4004", "-4005", "-1116", "-4120",
                   "-2027", "-2028", "-4014", "-4016", "-4024", "-4045", "-4061", "-1100", "-1102")
MIN_CCXT_VERSION = (4, 5, 27)  # the first ccxt that creates, fetches, cancels AND parses Binance algo orders
# Binance algo service statuses (Event Algo Order Update): waiting, on its way, executing, done.
ALGO_OPEN = "NEW"
ALGO_TRIGGERED = ("TRIGGERING", "TRIGGERED")
ALGO_DEAD = {"CANCELED": OrderStatus.CANCELED, "EXPIRED": OrderStatus.REJECTED, "REJECTED": OrderStatus.REJECTED}
TRIGGERED_REASON = "TRIGGERED"  # Order.reason of a stop that triggered and has not filled yet


def check_ccxt_version(version: str | None = None) -> str:
    """The installed ccxt, refused when older than 4.5.27 (issue 13 defect 5): Binance moved
    conditional orders to ``/fapi/v1/algoOrder`` on 2025-12-09 (-4120 on the old endpoint); ccxt
    routes them there since 4.5.2x and parses their order type since 4.5.27 (ccxt PR #27492;
    freqtrade's fix needed it too).

    Raises:
        ConfigError: one line naming the installed and the needed version and the fix.
    """
    if version is None:
        import ccxt

        version = ccxt.__version__
    parts = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    if parts < MIN_CCXT_VERSION:
        needed = ".".join(map(str, MIN_CCXT_VERSION))
        raise ConfigError(
            f"ccxt {version} is too old: OptiFlow needs ccxt >= {needed}, the first that places, looks up and "
            f"cancels Binance conditional orders on /fapi/v1/algoOrder (pip install 'ccxt>={needed},<5')"
        )
    return version


class _SecretFilter(logging.Filter):
    """Masks every registered secret in the records of :data:`CCXT_LOG` (message and args)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the secrets in ``record`` (always True: the record is kept, masked)."""
        if not self.secrets:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        masked = text
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if masked != text:
            record.msg, record.args = masked, ()
        return True


CCXT_LOG = logging.getLogger("trading.adapters.ccxt")  # what every ccxt client we build logs through
_SECRETS = _SecretFilter()
CCXT_LOG.addFilter(_SECRETS)


def guard_client_logs(client: Any, *secrets: str | None) -> None:
    """Route ``client``'s log (ccxt logs request headers at DEBUG) through :data:`CCXT_LOG`, whose
    filter replaces ``secrets`` (API key, secret, password) with ``***`` at any level."""
    for secret in secrets:
        if secret:
            _SECRETS.secrets.add(secret)
    client.logger = CCXT_LOG


def resolve_quote(mode: str, configured: str | None) -> str:
    """SPEC S-4: the configured quote coin wins; otherwise USDC perps in live and USDT in demo
    (demo environments list USDT-margined markets)."""
    if configured:
        return configured.upper()
    return "USDC" if mode == "live" else "USDT"


def unified_symbol(base_or_symbol: str, quote: str) -> str:
    """``XRP`` → ``XRP/<quote>:<quote>`` (a linear perpetual); a full unified symbol is kept."""
    if "/" in base_or_symbol:
        return base_or_symbol
    return f"{base_or_symbol.upper()}/{quote}:{quote}"


_OKX_DUPLICATE = re.compile(r'"sCode"\s*:\s*"51016"')  # OKX: duplicated clOrdId / algoClOrdId
_OKX_BUSINESS = re.compile(r'"sCode"\s*:\s*"5[1-9]\d{3}"')  # OKX order-level refusals (51xxx–59xxx)


def map_ccxt_error(exc: Exception, retry_after_s: float | None = None) -> ExchangeError:
    """Translate a ccxt exception into our error types (STYLE: specific before general).

    Args:
        exc: what ccxt raised; retry_after_s: the Retry-After header of the reply, if any.
    Returns:
        The ``trading.domain.errors`` exception to raise (the text is the exchange's, without secrets).
    """
    text = str(exc)
    if isinstance(exc, ccxt_errors.OrderNotFound):
        return OrderNotFound(text)
    if "-4116" in text or isinstance(exc, ccxt_errors.DuplicateOrderId) or _OKX_DUPLICATE.search(text):
        return DuplicateClientOrderId(text)
    if isinstance(exc, ccxt_errors.InvalidOrder | ccxt_errors.InsufficientFunds | ccxt_errors.BadSymbol):
        return OrderRejected(text)
    if isinstance(exc, ccxt_errors.RateLimitExceeded | ccxt_errors.DDoSProtection):
        return RateLimited(text, retry_after_s if retry_after_s is not None else 1.0)
    if isinstance(exc, ccxt_errors.InvalidNonce) or "-1021" in text:
        return TimestampOutOfSync(text)
    if isinstance(exc, ccxt_errors.RequestTimeout):
        return RequestTimedOut(text)
    if isinstance(exc, ccxt_errors.AuthenticationError):
        return AuthenticationFailed(text)
    if isinstance(exc, ccxt_errors.OperationFailed):  # NetworkError, ExchangeNotAvailable, 5xx
        return ExchangeUnavailable(text)
    if isinstance(exc, ccxt_errors.BadRequest | ccxt_errors.OperationRejected):  # filters, params, -4045, -4061
        return OrderRejected(text)
    if any(code in text for code in _BUSINESS_CODES) or _OKX_BUSINESS.search(text):
        return OrderRejected(text)
    return ExchangeError(text)


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    """A position as the exchange reports it: signed contracts (+long/−short), entry price, mark
    price and liquidation price in quote, leverage and margin mode."""

    symbol: str
    contracts: Decimal
    entry_price: Decimal
    mark_price: Decimal | None
    leverage: int | None
    margin_mode: str | None
    liquidation_price: Decimal | None = None  # the exchange's figure; None when it reports none (0)


@dataclass(frozen=True, slots=True)
class ExchangeTrade:
    """One fill as the exchange reports it (``fetch_my_trades``): amounts in contracts, price and
    fee in quote, time epoch ms UTC."""

    trade_id: str
    client_order_id: str | None
    order_id: str
    symbol: str
    side: OrderSide
    amount: Decimal
    price: Decimal
    fee: Decimal
    timestamp: int


@dataclass(slots=True)
class AccountRules:
    """What the account itself says at start (issue 13 defect 7, SPEC O-7): ``hedged`` (dual-side
    position mode: the bot needs one-way, every order would get -4061), ``multi_assets``
    (margin from every asset: the quote coin's own balance can be 0 with funds), and the real
    commission rates per symbol: (maker, taker) fractions (USDC perpetuals differ from ccxt's
    defaults)."""

    hedged: bool
    multi_assets: bool
    commission: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


class CcxtExchange:
    """ExchangePort over ccxt (SPEC S-1 demo/live, S-3, S-4).

    Args:
        exchange_id: ``binanceusdm`` (first) or ``okx`` (USDT swaps, issue 18);
        mode: ``demo`` (Binance futures demo trading, ccxt ``enable_demo_trading``; OKX demo
        trading, ccxt's sandbox mode: the ``x-simulated-trading: 1`` header) or ``live``;
        api_key / secret / password: plain strings taken from SecretStr at the composition root
        (``password`` is OKX's API passphrase);
        api_base: test/self-hosted base URL replacing every REST URL (loopback fake in tests);
        stop_working_type: ``MARK_PRICE`` or ``CONTRACT_PRICE`` for stops (SPEC O-3);
        timeout_ms: per-request timeout; quote: the quote / settle coin (SPEC S-4, see
        :func:`resolve_quote`); margin_mode: ``isolated`` / ``cross``, the default of every
        symbol until :meth:`set_margin_mode` (OKX sends it with each order); rate_limit_ms: ccxt's ``rateLimit`` (ms per unit of request
        weight; None keeps ccxt's exchange default — tests against the loopback fake lower it).
    Raises:
        ConfigError: unknown exchange, or sandbox mode requested for Binance futures.
    """

    def __init__(
        self,
        *,
        exchange_id: str = "binanceusdm",
        mode: Mode = "demo",
        api_key: str | None = None,
        secret: str | None = None,
        password: str | None = None,
        api_base: str | None = None,
        sandbox: bool = False,
        stop_working_type: str = "MARK_PRICE",
        timeout_ms: int = 10_000,
        quote: str = "USDT",
        rate_limit_ms: int | None = None,
        margin_mode: str = "isolated",
        client: Any | None = None,
    ) -> None:
        check_ccxt_version()
        resolved = EXCHANGE_IDS.get(exchange_id)
        if resolved is None:
            raise ConfigError(f"exchange: {exchange_id!r} is not supported (binanceusdm, okx)")
        if sandbox and resolved == "binanceusdm":
            raise ConfigError(
                "exchange: Binance futures has no sandbox any more (ccxt set_sandbox_mode is refused); "
                "use mode 'demo' (Binance demo trading) instead"
            )
        self.exchange_id = resolved
        # What a "duplicated client order id" reply means: Binance (-4116) refuses an id only
        # while an order under it is open; OKX (51016) refuses an id used at any time before,
        # whatever became of its order (trading.adapters.order_gateway reads this).
        self.duplicate_means_open = resolved == "binanceusdm"
        self.mode = mode
        self.stop_working_type = stop_working_type
        self.quote = quote
        options: dict[str, Any] = {"defaultType": "swap"}
        if resolved == "binanceusdm":
            options.update(fetchCurrencies=False, warnOnFetchOpenOrdersWithoutSymbol=False)
        if resolved == "okx":
            options["fetchMarkets"] = {"types": ["swap"]}  # perpetual swaps only (S-3)
        config: dict[str, Any] = {
            "enableRateLimit": True, "timeout": timeout_ms, "options": options,
        }
        if rate_limit_ms is not None:
            config["rateLimit"] = rate_limit_ms  # ms per request weight (ccxt's throttle stays on)
        if api_key:
            config["apiKey"] = api_key
        if secret:
            config["secret"] = secret
        if password:
            config["password"] = password
        self.client = client or getattr(ccxt_async, resolved)(config)
        guard_client_logs(self.client, api_key, secret, password)
        self.client.maxRetriesOnFailure = 0
        if mode == "demo" and resolved == "binanceusdm":
            self.client.enable_demo_trading(True)
        elif mode == "demo" and resolved == "okx":
            self.client.set_sandbox_mode(True)  # OKX demo trading is its sandbox header
        if api_base:
            self.client.urls["api"] = {key: rebase_url(url, api_base) for key, url in self.client.urls["api"].items()}
        self._markets: dict[str, Market] = {}
        self._conditional: dict[str, bool] = {}  # client order id → placed as a conditional order
        self.margin_mode = margin_mode  # the default tdMode (OKX)
        self._margin_modes: dict[str, str] = {}  # symbol → margin mode set (OKX: sent as tdMode)
        self._leverage: dict[str, int] = {}  # symbol → leverage set (OKX: per margin mode)
        self.multi_assets: bool | None = None  # read once (fetch_account_rules / fetch_balance)
        self.triggered: set[str] = set()  # conditional orders seen triggered and not finished yet
        self._cancel_requested: set[str] = set()  # client ids we asked to cancel
        self.venue_cancelled: list[str] = []  # conditional orders the venue cancelled on its own
        self._client_ids: dict[str, str] = {}  # exchange order id → client order id (cache)

    # ----------------------------------------------------------- lifecycle
    async def close(self) -> None:
        """Close the ccxt HTTP session (call once on shutdown)."""
        await self.client.close()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, method)(*args, **kwargs)
        except ccxt_errors.BaseError as exc:
            headers = getattr(self.client, "last_response_headers", None) or {}
            retry_after = headers.get("Retry-After") or headers.get("retry-after")
            mapped = map_ccxt_error(exc, float(retry_after) if retry_after else None)
            raise mapped from None

    # ---------------------------------------------------------------- port
    async def load_markets(self) -> dict[str, Market]:
        """Market rules per unified symbol (ccxt ``load_markets``, once; later calls use the cache)."""
        if not self._markets:
            raw = await self._call("load_markets")
            self._markets = {s: market_from_ccxt(m) for s, m in raw.items() if m.get("swap") and m.get("linear")}
        return dict(self._markets)

    def market(self, symbol: str) -> Market:
        """The rules of ``symbol``. Raises UnknownSymbol when the exchange does not list it."""
        market = self._markets.get(symbol)
        if market is None:
            raise UnknownSymbol(f"{symbol} is not a linear perpetual on {self.exchange_id}")
        return market

    async def load_time_difference(self) -> None:
        """Resync the local clock offset with the exchange (after -1021, SPEC O-4)."""
        await self._call("load_time_difference")

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """Set leverage (×) for ``symbol``; on OKX for the symbol's margin mode (``mgnMode``;
        ``posSide`` net in isolated, which ccxt adds)."""
        if self.exchange_id == "okx":
            mode = self._margin_modes.get(symbol, self.margin_mode)
            await self._call("set_leverage", leverage, symbol, {"mgnMode": mode})
            self._leverage[symbol] = leverage
            return
        await self._call("set_leverage", leverage, symbol)

    async def set_margin_mode(self, symbol: str, margin_mode: str) -> None:
        """Set ``cross`` or ``isolated`` margin on ``symbol``; "no need to change" is success.

        OKX has no account setting for it: the mode travels with every order (``tdMode``) and
        leverage is set per mode, so this records the mode and, when a leverage was set already,
        sets it again for the new mode (SPEC O-7). Nothing here can fail start-up on OKX.

        Raises:
            OrderRejected: ``margin_mode`` is neither isolated nor cross; the exchange refused.
        """
        if self.exchange_id == "okx":
            if margin_mode not in okx.MARGIN_MODES:
                raise OrderRejected(f"{symbol}: margin mode {margin_mode!r} is not isolated or cross")
            self._margin_modes[symbol] = margin_mode
            if symbol in self._leverage:
                await self.set_leverage(symbol, self._leverage[symbol])
            return
        try:
            await self._call("set_margin_mode", margin_mode, symbol)
        except ExchangeError as exc:
            if "-4046" not in exc.reason and "No need to change" not in exc.reason:
                raise

    async def fetch_position_mode(self, symbol: str | None = None) -> bool:
        """True when the account is in hedge (dual-side) mode; the bot needs one-way (O-7)."""
        result = await self._call("fetch_position_mode", symbol)
        return bool(result.get("hedged"))

    async def fetch_balance(self) -> Decimal:
        """Wallet balance (realised PnL, fees and funding in; unrealised PnL out) of the quote
        coin, in quote — what ``ExchangePort.fetch_balance`` means.

        Binance USDⓈ-M: the account's ``walletBalance`` of the quote asset, or its
        ``totalWalletBalance`` in multi-assets mode (margin from every asset: the quote's own
        balance can be 0 with funds). Never ccxt's ``total``: that is the margin balance, which
        already holds the unrealised PnL (the engine adds it once, SPEC R-3 / R-5 / Z-4).

        OKX: the quote coin's ``cashBal`` (ccxt's ``total`` there is ``eq``, with the unrealised
        PnL; :func:`trading.adapters.okx.wallet_balance`)."""
        if self.exchange_id != "binanceusdm":
            balance = await self._call("fetch_balance")
            if self.exchange_id == "okx":
                return okx.wallet_balance(balance, self.quote)
            total = (balance.get(self.quote) or {}).get("total")
            return _dec(total) or Decimal(0)
        if self.multi_assets is None:
            self.multi_assets = await self.fetch_multi_assets()
        account = await self._call("fapiPrivateV3GetAccount")
        if self.multi_assets:
            return _dec(account.get("totalWalletBalance")) or Decimal(0)
        for asset in account.get("assets") or []:
            if asset.get("asset") == self.quote:
                return _dec(asset.get("walletBalance")) or Decimal(0)
        return Decimal(0)

    async def fetch_multi_assets(self) -> bool:
        """True when the account is in multi-assets margin mode (Binance ``multiAssetsMargin``)."""
        if self.exchange_id != "binanceusdm":
            return False
        raw = await self._call("fapiPrivateGetMultiAssetsMargin")
        self.multi_assets = bool(raw.get("multiAssetsMargin"))
        return self.multi_assets

    async def fetch_account_rules(self, symbols: list[str]) -> AccountRules:
        """Position mode, multi-assets mode and the account's real commission rates of
        ``symbols`` (issue 13 defect 7); the rates replace the market rules' fees, so fees are
        booked as the exchange charges them."""
        hedged = await self.fetch_position_mode(symbols[0] if symbols else None)
        multi = await self.fetch_multi_assets()
        rules = AccountRules(hedged, multi)
        if self.exchange_id == "binanceusdm":
            for symbol in symbols:
                fee = await self._call("fetch_trading_fee", symbol)
                maker, taker = _dec(fee.get("maker")), _dec(fee.get("taker"))
                if maker is None or taker is None:
                    continue
                rules.commission[symbol] = (maker, taker)
                if symbol in self._markets:
                    self._markets[symbol] = replace(self._markets[symbol], maker_fee=maker, taker_fee=taker)
        return rules

    async def create_order(self, order: Order) -> Order:
        """Place ``order`` under its client order id (SPEC O-2); brackets are reduce-only
        conditional orders with ``workingType`` (SPEC O-3).

        Raises:
            OrderRejected (DuplicateClientOrderId for -4116), RateLimited, TimestampOutOfSync,
            RequestTimedOut, ExchangeUnavailable, ExchangeError.
        """
        self.market(order.symbol)  # UnknownSymbol before anything is sent
        amount = self.client.amount_to_precision(order.symbol, str(order.amount))
        if self.exchange_id == "okx":
            return await self._create_okx(order, amount)
        params: dict[str, Any] = {"clientOrderId": order.client_order_id}
        if order.reduce_only:
            params["reduceOnly"] = True
        conditional = order.type not in (OrderType.MARKET, OrderType.LIMIT)
        price = None
        if order.type is OrderType.LIMIT:  # O-3 limit entry: rests on the book until filled or cancelled
            assert order.price is not None
            price = self.client.price_to_precision(order.symbol, str(order.price))
            params["timeInForce"] = "GTC"
        if conditional:
            assert order.trigger_price is not None
            params["triggerPrice"] = self.client.price_to_precision(order.symbol, str(order.trigger_price))
            params["workingType"] = self.stop_working_type
            if order.type is OrderType.STOP_MARKET:
                params["priceProtect"] = True
            if order.type is OrderType.TAKE_PROFIT:  # O-3 tp_order_style "limit": the limit is the target
                price = params["triggerPrice"]
                params["timeInForce"] = "GTC"
        self._conditional[order.client_order_id] = conditional
        raw = await self._call("create_order", order.symbol, order.type.value.lower() if not conditional
                               else order.type.value, order.side.value, amount, price, params)
        return self._merge(order, raw)

    async def _create_okx(self, order: Order, amount: str) -> Order:
        """Place ``order`` on OKX (:func:`trading.adapters.okx.order_request`)."""
        conditional = order.type not in (OrderType.MARKET, OrderType.LIMIT)
        price = trigger = None
        if order.type is OrderType.LIMIT:
            assert order.price is not None
            price = self.client.price_to_precision(order.symbol, str(order.price))
        if conditional:
            assert order.trigger_price is not None
            trigger = self.client.price_to_precision(order.symbol, str(order.trigger_price))
        kind, price, params = okx.order_request(
            order, amount=amount, price=price, trigger=trigger,
            margin_mode=self._margin_modes.get(order.symbol, self.margin_mode), stop_working_type=self.stop_working_type)
        self._conditional[order.client_order_id] = conditional
        raw = await self._call("create_order", order.symbol, kind, order.side.value, amount, price, params)
        return self._merge(order, raw)

    async def _okx_algo_state(self, order: Order, raw: dict, symbol: str) -> Order:
        """An OKX algo order's true state, read as :meth:`_conditional_state` reads Binance's:
        ``live`` is open; ``canceled`` / ``order_failed`` are final (a stop that failed on
        trigger is dead, R-10; a cancel we did not ask for is the venue's own, noted in
        :attr:`venue_cancelled`); ``effective`` is the order it placed (``ordId``): filled →
        closed; still working → open with reason TRIGGERED (and in :attr:`triggered`);
        cancelled or expired → dead with whatever part filled. ``effective`` before the placed
        order can be read counts as triggered (the venue guard closes the rest after its grace)."""
        cid = order.client_order_id
        state, placed = okx.algo_state(raw)
        if state in okx.ALGO_OPEN or not state:
            self.triggered.discard(cid)
            return replace(order, status=OrderStatus.OPEN, filled=Decimal(0), average=None)
        if state in okx.ALGO_DEAD:
            self.triggered.discard(cid)
            if state == "canceled" and cid in self._cancel_requested:
                reason = "canceled"
            elif state == "canceled":
                reason = "canceled by the venue (not by this bot)"
                if cid not in self.venue_cancelled:
                    self.venue_cancelled.append(cid)
            else:
                code = str((raw.get("info") or {}).get("failCode") or "")
                reason = "order_failed: the order placed on trigger was refused" + (f" ({code})" if code else "")
            return replace(order, status=okx.ALGO_DEAD[state], filled=Decimal(0), average=None, reason=reason)
        if not placed:  # triggered, its order not readable yet
            self.triggered.add(cid)
            return replace(order, status=OrderStatus.OPEN, filled=Decimal(0), average=None, reason=TRIGGERED_REASON)
        return await self._triggered_outcome(order, placed, symbol)

    async def fetch_order(self, client_order_id: str, symbol: str) -> Order:
        """The order with this client order id (plain or conditional).

        Raises:
            OrderNotFound: the exchange does not know it (it was never accepted).
        """
        for conditional in self._kinds(client_order_id):
            params: dict[str, Any] = {"clientOrderId": client_order_id}
            if conditional:
                params["trigger"] = True
            try:
                raw = await self._call("fetch_order", None, symbol, params)
            except OrderNotFound:
                continue
            self._conditional[client_order_id] = conditional
            if conditional and self.exchange_id == "okx":
                return await self._okx_algo_state(self.parse_order(raw), raw, symbol)
            if conditional:
                return await self._conditional_state(self.parse_order(raw), raw.get("info") or {}, symbol)
            return self.parse_order(raw)
        raise OrderNotFound(f"{symbol}: order {client_order_id} does not exist")

    async def _conditional_state(self, order: Order, info: dict, symbol: str) -> Order:
        """A conditional order's true state (issue 13 defect 1): NEW is open; CANCELED / EXPIRED
        / REJECTED are final (a cancel we did not ask for is the venue's own, noted in
        :attr:`venue_cancelled`); once triggered the outcome is the market (or limit) order it
        became: filled → closed; still working → open with reason TRIGGERED (and in
        :attr:`triggered`); expired or cancelled → final with whatever part filled."""
        cid = order.client_order_id
        algo_status = str(info.get("algoStatus") or "").upper()
        actual = str(info.get("actualOrderId") or "")
        if algo_status == ALGO_OPEN:
            self.triggered.discard(cid)
            return replace(order, status=OrderStatus.OPEN, filled=Decimal(0), average=None)
        if not actual and algo_status in ALGO_TRIGGERED:  # on its way to the matching engine
            self.triggered.add(cid)
            return replace(order, status=OrderStatus.OPEN, filled=Decimal(0), average=None, reason=TRIGGERED_REASON)
        if not actual:  # CANCELED, EXPIRED, REJECTED — or finished without an order: dead either way
            self.triggered.discard(cid)
            reason = f"{algo_status.lower() or 'gone'} by the exchange" + (f": {info['rm']}" if info.get("rm") else "")
            if algo_status == "CANCELED":
                if cid in self._cancel_requested:
                    reason = "canceled"
                else:
                    reason = "CANCELED by the venue (not by this bot)"
                    if cid not in self.venue_cancelled:
                        self.venue_cancelled.append(cid)
            return replace(order, status=ALGO_DEAD.get(algo_status, OrderStatus.REJECTED), filled=Decimal(0),
                           average=None, reason=reason)
        return await self._triggered_outcome(order, actual, symbol)

    async def _triggered_outcome(self, order: Order, placed_id: str, symbol: str) -> Order:
        """``order``, a conditional order that triggered, as the order it placed on the venue
        (exchange id ``placed_id``) stands: still working (open, ``TRIGGERED_REASON``), filled in
        full (closed), or dead with whatever part of it filled (rejected: expired, cancelled or
        refused in the matching engine — a gap, price protection, liquidity; SPEC R-10)."""
        cid = order.client_order_id
        executed = self.parse_order(await self._call("fetch_order", placed_id, symbol))
        updated = executed.updated_ms or order.updated_ms
        if executed.status is OrderStatus.OPEN:
            self.triggered.add(cid)
            return replace(order, status=OrderStatus.OPEN, filled=executed.filled, average=executed.average,
                           updated_ms=updated, reason=TRIGGERED_REASON)
        self.triggered.discard(cid)
        if executed.status is OrderStatus.CLOSED and executed.filled >= order.amount:
            return replace(order, status=OrderStatus.CLOSED, filled=executed.filled, average=executed.average,
                           updated_ms=updated)
        return replace(order, status=OrderStatus.REJECTED, filled=executed.filled, average=executed.average,
                       updated_ms=updated, reason=f"triggered, then {executed.status.value} with "
                                                  f"{executed.filled} of {order.amount} filled")

    async def client_order_id_of(self, symbol: str, order_id: str) -> str:
        """The client order id of the exchange order ``order_id`` (a fill's order; cached).

        Raises:
            OrderNotFound: the exchange does not know it."""
        cid = self._client_ids.get(order_id)
        if cid is None:
            raw = await self._call("fetch_order", order_id, symbol)
            # OKX: the order a triggered algo placed has no clOrdId; its algoClOrdId is ours.
            found = okx.client_order_id(raw) if self.exchange_id == "okx" else raw.get("clientOrderId")
            cid = self._client_ids[order_id] = str(found or "")
        return cid

    async def position_order_ids(self, symbol: str, signed: Decimal, depth: int = 100) -> list[str] | None:
        """The client order ids of the fills that built the exchange's current position of
        ``symbol`` (``signed`` contracts): the latest fills walked back until their sum is the
        position (issue 13 defect 11). None when the last ``depth`` fills do not add up to it
        (the position cannot be explained from them)."""
        trades = await self.fetch_my_trades(symbol, None, depth)
        running = Decimal(0)
        order_ids: list[str] = []
        for trade in reversed(trades):
            running += trade.amount if trade.side is OrderSide.BUY else -trade.amount
            if trade.order_id not in order_ids:
                order_ids.append(trade.order_id)
            if running == signed:
                return [await self.client_order_id_of(symbol, oid) for oid in order_ids]
        return None

    async def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        """Cancel an open order by client order id; returns it canceled.

        Raises:
            OrderNotFound: unknown or no longer open (Binance -2011).
        """
        self._cancel_requested.add(client_order_id)
        for conditional in self._kinds(client_order_id):
            params: dict[str, Any] = {"clientOrderId": client_order_id}
            if conditional:
                params["trigger"] = True
            try:
                await self._call("cancel_order", None, symbol, params)
            except OrderNotFound:
                continue
            return Order(client_order_id=client_order_id, bot="", symbol=symbol, side=OrderSide.BUY,
                         type=OrderType.STOP_MARKET if conditional else OrderType.MARKET,
                         leg=_leg(client_order_id), amount=Decimal(0), reduce_only=True, created_ms=0,
                         status=OrderStatus.CANCELED)
        raise OrderNotFound(f"{symbol}: Unknown order sent ({client_order_id})")

    async def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders (plain and conditional), optionally of one symbol."""
        plain = await self._call("fetch_open_orders", symbol)
        algo_params: dict[str, Any] = {"trigger": True}
        if self.exchange_id == "okx":  # ccxt would list ordType "trigger"; our brackets are conditional
            algo_params["ordType"] = okx.ALGO_ORD_TYPE
        algo = await self._call("fetch_open_orders", symbol, None, None, algo_params)
        orders = [self.parse_order(r) for r in plain] + [self.parse_order(r, conditional=True) for r in algo]
        return [o for o in orders if o.status is OrderStatus.OPEN]

    async def fetch_positions(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Open positions as the port defines them (``ExchangePort.fetch_positions``, SPEC O-5,
        L-3): symbol → (signed contracts, +long/−short; entry price in quote)."""
        return {p.symbol: (p.contracts, p.entry_price) for p in await self.fetch_position_details()}

    async def fetch_position_details(self) -> list[ExchangePosition]:
        """Open positions (non-zero) of the account, one-way mode, with mark price, leverage and
        margin mode."""
        raw = await self._call("fetch_positions")
        positions = []
        for p in raw:
            contracts = _dec(p.get("contracts")) or Decimal(0)
            if contracts == 0 or p.get("symbol") not in self._markets:
                continue
            signed = contracts if p.get("side") == "long" else -contracts
            liquidation = _dec(p.get("liquidationPrice"))
            positions.append(ExchangePosition(
                p["symbol"], signed, _dec(p.get("entryPrice")) or Decimal(0), _dec(p.get("markPrice")),
                int(p["leverage"]) if p.get("leverage") else None, p.get("marginMode"),
                liquidation if liquidation is not None and liquidation > 0 else None,
            ))
        return positions

    async def fetch_next_funding(self, symbol: str) -> tuple[Decimal, int] | None:
        """The funding rate (fraction) the exchange will apply next to ``symbol`` and when (epoch
        ms UTC), from ccxt ``fetch_funding_rate`` (Binance ``premiumIndex``); None when it gives
        no time."""
        raw = await self._call("fetch_funding_rate", symbol)
        rate = _dec(raw.get("fundingRate"))
        when = raw.get("fundingTimestamp") or raw.get("nextFundingTimestamp")
        if rate is None or not when:
            return None
        return rate, int(when)

    async def fetch_my_trades(self, symbol: str, since_ms: int | None = None, limit: int | None = None) -> list[ExchangeTrade]:
        """Fills of ``symbol`` since ``since_ms`` (epoch ms UTC; None: the latest ``limit``),
        oldest first."""
        raw = await self._call("fetch_my_trades", symbol, since_ms, limit)
        return [
            ExchangeTrade(str(t["id"]), t.get("clientOrderId"), str(t.get("order")), t["symbol"],
                          OrderSide(t["side"]), Decimal(str(t["amount"])), Decimal(str(t["price"])),
                          Decimal(str((t.get("fee") or {}).get("cost") or 0)), int(t["timestamp"]))
            for t in raw
        ]

    async def fetch_key_permissions(self) -> dict[str, bool]:
        """What the API key may do (Binance ``sapi/v1/account/apiRestrictions``; in demo mode the
        futures account's ``canTrade``). Keys: ``read``, ``futures``, ``withdrawals``."""
        if self.exchange_id == "binanceusdm" and self.mode == "live":
            raw = await self._call("sapi_get_account_apirestrictions")
            return {"read": bool(raw.get("enableReading")), "futures": bool(raw.get("enableFutures")),
                    "withdrawals": bool(raw.get("enableWithdrawals"))}
        if self.exchange_id == "binanceusdm":
            raw = await self._call("fapiPrivateV2GetAccount")  # v3 no longer carries canTrade
            return {"read": True, "futures": bool(raw.get("canTrade")), "withdrawals": bool(raw.get("canWithdraw"))}
        if self.exchange_id == "okx":
            raw = await self._call("private_get_account_config")
            return okx.key_permissions(((raw or {}).get("data") or [{}])[0])
        await self._call("fetch_balance")
        return {"read": True, "futures": True, "withdrawals": False}

    async def fetch_ohlcv(self, symbol: str, timeframe: str, limit: int) -> list[Candle]:
        """The last ``limit`` candles of ``symbol`` (open time epoch ms UTC, prices in quote,
        volume in contracts), oldest first; the last one may still be forming."""
        rows = await self._call("fetch_ohlcv", symbol, timeframe, None, limit)
        return [Candle(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])) for r in rows]

    async def fetch_last_price(self, symbol: str) -> Decimal:
        """Last traded price of ``symbol`` in quote."""
        ticker = await self._call("fetch_ticker", symbol)
        return Decimal(str(ticker["last"]))

    async def fetch_mark_price(self, symbol: str) -> Decimal:
        """The mark price of ``symbol`` in quote (ccxt ``fetch_mark_price``: Binance
        ``GET /fapi/v1/premiumIndex?symbol=`` weight 1, OKX ``GET /api/v5/public/mark-price``).
        Raises the mapped :class:`ExchangeError` when the read fails."""
        ticker = await self._call("fetch_mark_price", symbol)
        return Decimal(str(ticker["markPrice"]))

    async def spread_pct(self, symbol: str, price: float) -> float | None:
        """The best bid/ask of ``symbol`` now, as a spread in % of mid (SPEC F-1), from the top
        of its order book (ccxt ``fetch_order_book``, 5 levels: Binance ``GET /fapi/v1/depth``
        weight 2, OKX ``GET /api/v5/market/books``); None when a side is empty. Raises the
        mapped :class:`ExchangeError` when the read fails."""
        book = await self._call("fetch_order_book", symbol, 5)
        if not book.get("bids") or not book.get("asks"):
            return None
        bid, ask = Decimal(str(book["bids"][0][0])), Decimal(str(book["asks"][0][0]))
        mid = (bid + ask) / 2
        return float((ask - bid) / mid * 100) if mid > 0 else None

    # ------------------------------------------------------------ parsing
    def _kinds(self, client_order_id: str) -> tuple[bool, ...]:
        known = self._conditional.get(client_order_id)
        if known is not None:
            return (known,)
        leg = _leg(client_order_id)
        guess = leg in (OrderLeg.STOP_LOSS, OrderLeg.TP1, OrderLeg.TP2, OrderLeg.TP3)
        return (guess, not guess)

    def parse_order(self, raw: dict, conditional: bool | None = None) -> Order:
        """A ccxt order dict → our :class:`Order` (bot unknown: "")."""
        info = raw.get("info") or {}
        kind = (info.get("orderType") or info.get("type") or raw.get("type") or "MARKET").upper()
        try:
            order_type = OrderType(kind)
        except ValueError:
            order_type = OrderType.MARKET
        cid = raw.get("clientOrderId") or ""
        trigger = _dec(raw.get("triggerPrice"))
        if self.exchange_id == "okx":
            order_type, cid, trigger = okx.order_type(raw), okx.client_order_id(raw), okx.trigger_price(raw)
        status = _STATUS.get(raw.get("status") or "", OrderStatus.OPEN)
        algo_status = str(info.get("algoStatus") or "").upper()
        if algo_status:
            # The algo service's own status (see _conditional_state for a triggered one's fate).
            status = ALGO_DEAD.get(algo_status, OrderStatus.OPEN)
        if conditional is not None:
            self._conditional[cid] = conditional
        return Order(
            client_order_id=cid, bot="", symbol=raw["symbol"], side=OrderSide(raw["side"]), type=order_type,
            leg=_leg(cid), amount=_dec(raw.get("amount")) or Decimal(0), reduce_only=bool(raw.get("reduceOnly")),
            created_ms=int(raw.get("timestamp") or 0), status=status,
            trigger_price=trigger, filled=_dec(raw.get("filled")) or Decimal(0),
            average=_dec(raw.get("average")) or None, updated_ms=int(raw.get("lastUpdateTimestamp") or 0),
            price=_dec(raw.get("price")) if order_type is OrderType.LIMIT else None,
        )

    def _merge(self, order: Order, raw: dict) -> Order:
        parsed = self.parse_order(raw)
        return replace(order, status=parsed.status, filled=parsed.filled, average=parsed.average,
                       updated_ms=parsed.updated_ms or order.created_ms)


def _leg(client_order_id: str) -> OrderLeg:
    """The order leg encoded in our client order ids (SPEC O-2, :func:`trading.domain.oms.leg_of`)."""
    return leg_of(client_order_id)


def rebase_url(url: Any, base: str) -> Any:
    """Replace scheme://host of a ccxt API URL with ``base`` (keeping the path)."""
    if not isinstance(url, str):
        return url
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3) if scheme_end >= 0 else -1
    path = url[path_start:] if path_start >= 0 else ""
    return base.rstrip("/") + path
