"""Demo / live trading pieces (SPEC S-1, S-2, S-4): the ccxt adapter built from settings, the
ccxt.pro stream clients, the quote coin applied to a config and the wall clock. The runtime
itself is the one every mode uses (``bot.runtime.build_exchange_runtime``)."""

from __future__ import annotations

import logging
import time

from trading.adapters.ccxt_exchange import CcxtExchange, resolve_quote, unified_symbol
from trading.adapters.ws_feed import make_ws_client
from trading.domain.config import TradingConfig
from trading.domain.errors import ConfigError

log = logging.getLogger(__name__)


def make_market_stream_client(settings, mode: str, *, user_data: bool = False):
    """The ccxt.pro client for S-2 websocket candles (public streams, no keys), or with
    ``user_data`` the keyed one for the user-data stream (order and position updates); None
    where everything stays on REST polling: only Binance USDⓈ-M streams are wired (OKX polls).
    ``EXCHANGE_API_BASE`` also moves the streams (``ws://host/ws``: loopback fakes, proxies)."""
    if settings.optiflow_exchange != "binanceusdm":
        return None
    if not user_data:
        return make_ws_client(mode, api_base=settings.exchange_api_base)
    return make_ws_client(mode, api_base=settings.exchange_api_base,
                          api_key=settings.binance_api_key.get_secret_value(),
                          secret=settings.binance_api_secret.get_secret_value())


class WallClock:
    """The wall clock, epoch ms UTC."""

    def now_ms(self) -> int:
        """Current wall time, epoch ms UTC."""
        return int(time.time() * 1000)


def make_exchange(settings, mode: str, *, timeout_ms: int = 10_000,
                  stop_working_type: str = "MARK_PRICE", margin_mode: str = "isolated") -> CcxtExchange:
    """The ccxt adapter for ``mode`` from settings (keys from SecretStr, never printed):
    ``OPTIFLOW_EXCHANGE``'s credentials (:meth:`bot.settings.Settings.exchange_credentials`; OKX
    also takes its API passphrase), ``stop_working_type``: the config's
    ``orders.stop_working_type`` (SPEC O-3), ``margin_mode``: its ``account.margin_mode`` (OKX
    sends it with every order as ``tdMode``).

    Raises:
        ConfigError: credentials missing (names the variables, never their values).
    """
    credentials = settings.exchange_credentials()
    missing = [name for name, value in credentials if value is None]
    if missing:
        raise ConfigError(f"{mode} mode on {settings.optiflow_exchange} needs " + " and ".join(missing))
    values = [value.get_secret_value() for _name, value in credentials]
    return CcxtExchange(
        exchange_id=settings.optiflow_exchange,
        mode=mode,  # type: ignore[arg-type]
        api_key=values[0],
        secret=values[1],
        password=values[2] if len(values) > 2 else None,
        api_base=settings.exchange_api_base,
        quote=resolve_quote(mode, settings.optiflow_quote),
        timeout_ms=timeout_ms,
        stop_working_type=stop_working_type,
        margin_mode=margin_mode,
    )


def requote(config: TradingConfig, quote: str) -> TradingConfig:
    """SPEC S-4: every bot's symbols on the resolved quote coin (``XRP/USDT:USDT`` →
    ``XRP/USDC:USDC`` when the quote is USDC)."""
    bots = []
    for bot in config.bots:
        symbols = tuple(unified_symbol(s.split("/")[0], quote) for s in bot.symbols)
        bots.append(bot.model_copy(update={"symbols": symbols}))
    account = config.account.model_copy(update={"quote": quote})
    return config.model_copy(update={"bots": tuple(bots), "account": account})
