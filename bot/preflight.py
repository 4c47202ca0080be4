"""``optiflow check`` (SPEC O-7 pre-flight) and ``optiflow smoke`` (a small round trip) against the
exchange in demo mode, or live with ``--live`` and keys (SPEC S-1). Paper mode never gets here.

Both print each step as they go; API keys are reported as present / missing, never shown.
``EXCHANGE_API_BASE`` replaces the exchange URLs (loopback fake in tests, self-hosted proxies).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from trading.domain.errors import ConfigError, ExchangeError, OptiFlowError
from trading.domain.models import OrderType, Side
from trading.domain.oms import client_order_id_prefix
from trading.domain.precision import check_order_size, floor_amount

EXIT_FAILED = 1
HEDGE_MODE = ("position mode: the account is in hedge (dual-side) mode; OptiFlow needs one-way mode "
              "(every order would be refused with -4061): switch it in Binance futures preferences")


async def startup_checks(gateway, config):
    """SPEC O-7 at every demo/live start (``bot.runtime.build_exchange_runtime``), not only in
    ``optiflow check`` (issue 13 defect 7): the position mode (hedge refused, one line), the
    margin mode of the assets (multi-assets: the balance is the account's total wallet) and the
    account's real commission rates per traded symbol, which replace ccxt's default fees in the
    market rules. Returns the adapter's ``AccountRules``.

    Raises:
        ConfigError: the account is in hedge (dual-side) mode.
        ExchangeError: the exchange could not be read after retries.
    """
    import logging

    await gateway.load_markets()
    rules = await gateway.fetch_account_rules(list(config.all_symbols()))
    if rules.hedged:
        raise ConfigError(HEDGE_MODE)
    log = logging.getLogger(__name__)
    if rules.multi_assets:
        log.info("multi-assets margin mode: the balance is the account's total wallet balance")
    for symbol, (maker, taker) in rules.commission.items():
        log.info("%s: commission maker %s, taker %s (from the exchange)", symbol, maker, taker)
    return rules


def _mode(settings, live_flag: bool) -> str:
    """SPEC S-1: live only with --live (and keys); otherwise demo.

    Raises:
        ConfigError: OPTIFLOW_MODE=live without --live.
    """
    if live_flag:
        return "live"
    if settings.optiflow_mode == "live":
        raise ConfigError("OPTIFLOW_MODE=live needs the --live flag as well")
    return "demo"


def _ok(text: str) -> None:
    print(f"  ✅ {text}")


def _fail(text: str) -> None:
    print(f"  ❌ {text}")


async def check_command(args) -> int:
    """Pre-flight (SPEC O-7): config, keys present, key permissions, markets, quote-coin
    resolution (S-4), one-way position mode, margin mode and leverage per symbol, balance.
    Prints what it checked; returns 0 when everything passed, 1 otherwise."""
    from bot.cli import _load
    from bot.live import make_exchange, requote
    from trading.adapters.ccxt_exchange import resolve_quote

    settings, config = _load(args)
    mode = _mode(settings, args.live)
    print(f"OptiFlow pre-flight — {settings.optiflow_exchange}, {mode} mode")
    _ok(f"config: {len(config.bots)} bot(s): " + ", ".join(f"{b.name} ({len(b.symbols)} symbols)" for b in config.bots))
    credentials = settings.exchange_credentials()
    missing = [name for name, value in credentials if value is None]
    labels = {"KEY": "API key", "SECRET": "secret", "PASSPHRASE": "passphrase"}
    (_ok if not missing else _fail)(", ".join(
        f"{labels[name.rsplit('_', 1)[-1]]} " + (f"MISSING ({name})" if value is None else "present")
        for name, value in credentials))
    if missing:
        return EXIT_FAILED
    quote = resolve_quote(mode, settings.optiflow_quote)
    config = requote(config, quote)
    source = "OPTIFLOW_QUOTE" if settings.optiflow_quote else f"default for {mode}"
    _ok(f"quote coin: {quote} ({source}); symbols: {', '.join(config.all_symbols())}")
    orders = config.orders
    take_profit = "TAKE_PROFIT (limit at the target)" if orders.tp_order_style == "limit" else "TAKE_PROFIT_MARKET"
    _ok(f"brackets (O-3): stop-loss STOP_MARKET, take-profit {take_profit}, reduce-only, "
        f"triggered by {orders.stop_working_type}")
    exchange = make_exchange(settings, mode, stop_working_type=config.orders.stop_working_type,
                             margin_mode=config.account.margin_mode)
    failed = False
    try:
        permissions = await exchange.fetch_key_permissions()
        if permissions["futures"]:
            _ok("key permissions: futures trading enabled")
        else:
            _fail("key permissions: futures trading NOT enabled on this key")
            failed = True
        if permissions.get("withdrawals"):
            _fail("key permissions: withdrawals are enabled — use a key without withdrawal rights")
            failed = True
        markets = await exchange.load_markets()
        _ok(f"markets: {len(markets)} linear perpetuals listed")
        for symbol in config.all_symbols():
            market = markets.get(symbol)
            if market is None:
                _fail(f"{symbol}: not listed on {exchange.exchange_id}")
                failed = True
                continue
            _ok(f"{symbol}: tick {market.tick_size}, step {market.step_size}, min notional "
                f"{market.min_notional} {quote}, contractSize {market.contract_size}")
        rules = await exchange.fetch_account_rules([s for s in config.all_symbols() if s in markets])
        if rules.hedged:
            _fail("position mode: hedge (dual side) — OptiFlow needs one-way mode; switch it in the exchange settings")
            failed = True
        else:
            _ok("position mode: one-way")
        _ok("asset mode: " + ("multi-assets (margin from every asset; balance = total wallet)" if rules.multi_assets
                              else f"single-asset ({quote} margin)"))
        for symbol, (maker, taker) in rules.commission.items():
            _ok(f"{symbol}: commission maker {maker * 100:.4f} %, taker {taker * 100:.4f} % (the account's own)")
        for bot in config.bots:
            for symbol in bot.symbols:
                if symbol not in markets:
                    continue
                await exchange.set_margin_mode(symbol, config.account.margin_mode)
                await exchange.set_leverage(symbol, bot.leverage)
                _ok(f"{symbol}: margin {config.account.margin_mode}, leverage {bot.leverage}× ({bot.name})")
        balance = await exchange.fetch_balance()
        _ok(f"balance: {balance} {quote}")
    except ExchangeError as exc:
        _fail(f"exchange: {exc.reason}")
        failed = True
    finally:
        await exchange.close()
    print("pre-flight " + ("FAILED" if failed else "passed"))
    return EXIT_FAILED if failed else 0


async def smoke_command(args) -> int:
    """``optiflow smoke --symbol S --notional N``: open a long of about N quote at market, see its
    brackets rest on the exchange (stop verified, O-6), close it, and verify nothing of ours is
    left (no position, no order with our client-id prefix). Returns 0 on success, 1 otherwise."""
    from bot.cli import _load
    from bot.live import make_exchange
    from bot.runtime import build_exchange_runtime
    from trading.adapters.ccxt_exchange import resolve_quote, unified_symbol

    settings, config = _load(args)
    mode = _mode(settings, args.live)
    quote = resolve_quote(mode, settings.optiflow_quote)
    symbol = unified_symbol(args.symbol, quote)
    if args.notional <= 0:
        raise ConfigError("--notional must be positive")
    profile = config.bots[0].model_copy(update={"name": "smoke", "symbols": (symbol,)})
    config = config.model_copy(update={"bots": (profile,)})
    exchange = make_exchange(settings, mode, stop_working_type=config.orders.stop_working_type,
                             margin_mode=config.account.margin_mode)
    exchange.quote = quote
    print(f"OptiFlow smoke test — {symbol}, {args.notional} {quote}, {mode} mode")
    with tempfile.TemporaryDirectory(prefix="optiflow-smoke-") as tmp:
        try:
            runtime = await build_exchange_runtime(config=config, db_path=Path(tmp) / "smoke.db", exchange=exchange, env=mode)
        except BaseException:
            await exchange.close()
            raise
        try:
            return await _smoke_steps(runtime, symbol, args.notional, args.timeout, mode)
        finally:
            await runtime.close()


async def _wait(runtime, what: str, done, timeout_s: float) -> bool:
    """Tick the runtime (fills, stop checks) until ``done()`` is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await runtime.tick(runtime.engine.clock.now_ms())
        if await done():
            return True
        await asyncio.sleep(0.2)
    _fail(f"timed out waiting for {what}")
    return False


async def _smoke_steps(runtime, symbol: str, notional: Decimal, timeout_s: float, mode: str) -> int:
    engine, gateway, exchange = runtime.engine, runtime.gateway, runtime.exchange
    market = engine.markets[symbol]
    price = await exchange.fetch_last_price(symbol)
    contracts = floor_amount(market, notional / (price * market.contract_size))
    try:
        check_order_size(market, contracts, price)
    except OptiFlowError as exc:
        _fail(f"size: {exc}")
        return EXIT_FAILED
    _ok(f"reconciled before entry; last price {price}; entry {contracts} contracts")
    if await engine.submit_entry("smoke", symbol, Side.LONG, contracts, price=price) is None:
        _fail("entry refused by the order gate or rejected by the exchange (see the log for the reason)")
        return EXIT_FAILED
    prefix = client_order_id_prefix(mode, "smoke")

    async def has_position() -> bool:
        return ("smoke", symbol) in engine.positions

    if not await _wait(runtime, "the entry fill", has_position, timeout_s):
        return EXIT_FAILED
    position = engine.positions[("smoke", symbol)]
    _ok(f"opened: {position.contracts} at {position.entry_price}")

    async def stop_rests() -> bool:
        orders = await gateway.fetch_open_orders(symbol)
        return any(o.type is OrderType.STOP_MARKET and o.client_order_id.startswith(prefix) for o in orders)

    if not await _wait(runtime, "the stop-loss on the exchange", stop_rests, timeout_s):
        return EXIT_FAILED
    brackets = [o for o in await gateway.fetch_open_orders(symbol) if o.client_order_id.startswith(prefix)]
    _ok("brackets resting: " + ", ".join(f"{o.leg.value} {o.type.value} @ {o.trigger_price}" for o in brackets))
    if not await runtime.supervisor.verifier.verify("smoke", symbol):
        _fail("stop verification failed (placed again)")
        return EXIT_FAILED
    _ok("stop verified on the exchange (O-6)")
    await engine.close_position("smoke", symbol)

    async def flat() -> bool:
        return ("smoke", symbol) not in engine.positions

    if not await _wait(runtime, "the close fill", flat, timeout_s):
        return EXIT_FAILED
    await runtime.supervisor.reconciler.run()
    left_positions = [s for s in await gateway.fetch_positions() if s == symbol]
    left_orders = [o for o in await gateway.fetch_open_orders(symbol) if o.client_order_id.startswith(prefix)]
    if left_positions or left_orders:
        _fail(f"left on the exchange: {len(left_positions)} position(s), {len(left_orders)} order(s)")
        return EXIT_FAILED
    _ok("closed; nothing of ours left on the exchange (no position, no order)")
    print("smoke test passed")
    return 0
