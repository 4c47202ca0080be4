"""Process settings from the environment / ``.env`` (pydantic-settings). Secrets are SecretStr:
they never print in logs, reprs or errors. Trading profiles live in the TOML file instead."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trading.errors import ConfigError
from trading.marketdata import default_data_dir

# The console transport speaks as this user when the allow-list is empty.
CONSOLE_USER_ID = 1


class Settings(BaseSettings):
    """Environment settings; each field is the upper-case environment variable of its name.

    telegram_allowed_user_ids: comma-separated Telegram user ids (SPEC T-1);
    optiflow_mode: S-1 mode (only ``paper`` runs in this version); paths are relative to the
    working directory.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    telegram_bot_token: SecretStr | None = None
    telegram_allowed_user_ids: Annotated[tuple[int, ...], NoDecode] = ()
    telegram_api_base: str | None = None  # a self-hosted Bot API server, e.g. http://127.0.0.1:8081
    optiflow_mode: Literal["paper", "demo", "live"] = "paper"
    optiflow_config: Path | None = None
    optiflow_db_path: Path = Path("optiflow.db")
    optiflow_data_dir: Path = Field(default_factory=default_data_dir)
    optiflow_output_dir: Path = Path("out")
    optiflow_exchange: Literal["binanceusdm", "okx"] = "binanceusdm"
    optiflow_quote: str | None = None  # SPEC S-4: empty → USDC in live, USDT in demo
    # Base URL replacing every exchange REST URL: loopback fakes in tests, self-hosted proxies.
    exchange_api_base: str | None = None
    binance_api_key: SecretStr | None = None
    binance_api_secret: SecretStr | None = None
    optiflow_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("telegram_allowed_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return tuple(parts)
        return value

    @field_validator(
        "telegram_bot_token", "binance_api_key", "binance_api_secret", "optiflow_config",
        "telegram_api_base", "exchange_api_base", "optiflow_quote", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("optiflow_data_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return default_data_dir() if value in ("", None) else value

    def allowed_user_ids(self) -> frozenset[int]:
        """The allow-list; in console mode an empty list admits the console user only."""
        if self.telegram_allowed_user_ids or self.telegram_bot_token is not None:
            return frozenset(self.telegram_allowed_user_ids)
        return frozenset({CONSOLE_USER_ID})


def load_settings() -> Settings:
    """Read the settings.

    Raises:
        ConfigError: a variable is invalid; the message names it (never its secret value).
    """
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(f"environment: {name}: {first['msg']}") from None
