"""The outside world behind the ports: the ccxt adapter and the order gateway, the simulated
venue, REST / websocket candle feeds, the user-data stream, bundled market data files and
charts. Imports ``trading.domain`` and ``trading.ports`` only, never the engine."""
