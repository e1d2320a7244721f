"""`Emulator`: serves the API origin and the CDN origin on local ports inside an `async with`."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from .app import Service
from .config import EmulatorConfig
from .stats import EmulatorStats

__all__ = ["Emulator"]


class Emulator:
    """A local Nano Banana Pro queue service; `async with Emulator(config) as emu: ...`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._config = config or EmulatorConfig()
        self.stats = EmulatorStats()
        self._service = Service(self._config, self.stats)
        self._runners: list[web.AppRunner] = []
        self.base_url = ""
        self.cdn_url = ""

    @property
    def config(self) -> EmulatorConfig:
        """The configuration currently in force."""
        return self._config

    @property
    def api_key(self) -> str:
        """The key clients must send (`Bearer` or `Key` scheme)."""
        return self._config.api_key

    @property
    def credits_left(self) -> int | None:
        """Creates still payable, or None when credits are unlimited."""
        return self._service.engine.credits_left

    def add_credits(self, n: int) -> int:
        """Top the balance up by `n` creates and return it (ValueError if credits are unlimited)."""
        return self._service.engine.add_credits(n)

    @property
    def key_revoked(self) -> bool:
        """True while every API route answers 401 to the key (see `revoke_key`)."""
        return self._service.key_revoked

    def revoke_key(self) -> None:
        """Revoke the key now: every API route answers the gateway's 401 until `restore_key`."""
        self._service.revoke_key()

    def restore_key(self) -> None:
        """Accept the key again after `revoke_key` or `revoke_after_creates`."""
        self._service.restore_key()

    def reconfigure(self, **changes: Any) -> EmulatorConfig:
        """Replace configuration fields (faults, variants, rate_limit, ...) for later requests."""
        fixed = {"host", "port", "cdn_port", "seed", "deterministic_ids"} & changes.keys()
        if fixed:
            raise ValueError(f"cannot change {sorted(fixed)} on a running emulator")
        self._config = attrs.evolve(self._config, **changes)
        self._service.reconfigure(self._config)
        if "revoke_after_creates" in changes:
            self._service.arm_revocation()  # even when the value is unchanged
        return self._config

    async def start(self) -> None:
        """Bind both origins; afterwards `base_url` and `cdn_url` are set."""
        cfg = self._config
        try:
            api_port = await self._serve(self._service.api_app(), cfg.host, cfg.port)
            cdn_port = await self._serve(self._service.cdn_app(), cfg.host, cfg.cdn_port)
        except BaseException:
            await self.close()
            raise
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.base_url = f"http://{host}:{api_port}/model"
        self.cdn_url = f"http://{host}:{cdn_port}"
        self._service.base_url = self.base_url
        self._service.cdn_url = self.cdn_url

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        # access_log=None: logging every poll would cost more than answering it.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port)
        await site.start()
        return int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop serving and freeze all tasks."""
        self._service.engine.close()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        await self._service.images.aclose()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Emulator(base_url={self.base_url!r}, cdn_url={self.cdn_url!r})"
