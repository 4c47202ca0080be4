"""OptiFlow trading core: models, indicators, strategy, sizing, RiskGuard, OMS, exits, engine,
simulated exchange, reports. Never imports aiogram (a test enforces it)."""
