"""The trading core (SPEC O-9): one engine for paper, backtest, demo and live. Imports only
``trading.domain`` and ``trading.ports`` (``tests/test_architecture.py``)."""
