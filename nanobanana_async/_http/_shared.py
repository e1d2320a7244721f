"""The rate budget of a client: in-process (the default) or shared through Redis.

Every API request of a client (creates and polls) waits for a send slot from one pacer. The
in-process pacer, ``AdaptiveRateLimiter``, learns the account's limit from 429s on its own. Many
processes on one account (web workers, a sharded batch on several machines) each learning alone
overshoot together; :class:`RedisRateLimit` makes them one pacer: the send slots (a GCRA), the
measured send/accept/429 rates, the learned rate and the Retry-After hold live in one Redis hash
per account, updated atomically by a Lua script that runs ``PacingCore``'s algorithm (same
constants, CUBIC recovery and probe) on the Redis server's clock. When one process meets a real
limit, everyone slows down at once.

Where the shared script departs from ``PacingCore``, it is because many clients feed it: their
answers reach it in clumps (each client reports its other answers with its next call, its 429s at
once), so its meters average over twice the window, count answers in real time (not in time off
hold: with many clients, short holds follow each other), raise an estimate of the limit that
rests on less than one window by its relative error (guessing low would pace every client low
for the whole probe time), take a 429 share above 2% as the limit (a lone client cannot tell
a stray 429 from its limit below 10%; a shared budget is the account's traffic), and, with an
estimate resting on every client's answers, cut to 0.8 of it (not 0.7) and keep 3% below it
(not 7%).

Redis is an optimisation, never a dependency of a task: every call is bounded by a short
timeout, and on any failure the client paces locally (seeded with its share of the last shared
rate), logs one warning, and tries Redis again every ``retry_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from ..errors import ValidationError
from ._pacer import AdaptiveRateLimiter

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "LocalRateLimit",
    "Pacer",
    "RateLimit",
    "RedisRateLimit",
    "SharedPacer",
    "account_key",
    "make_pacer",
]

logger = logging.getLogger("nanobanana_async")

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_PREFIX = "nanobanana-async:pace:"
STATE_TTL = 3600  # seconds: an account's shared state outlives its last request by an hour
_MAX_CONNECTIONS = 16  # Redis connections of one client


class Pacer(Protocol):
    """What the transport needs of a rate budget."""

    async def acquire(self) -> None:
        """Wait for a send slot."""

    def on_success(self) -> None:
        """A response that was not a 429."""

    def on_throttle(self, retry_after: float | None = None) -> None:
        """A 429, with the hold the service asked for."""

    @property
    def rate(self) -> float | None:
        """The allowed requests/s (None = not paced)."""

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read time from ``clock`` from now on."""


def _check_rate(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValidationError(name, value, "must be > 0 requests/s or None")


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValidationError(attribute.name, value, "must be > 0 seconds")


def _max_rate(_: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    _check_rate(attribute.name, value)


def _redis_url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.startswith(REDIS_SCHEMES):
        raise ValidationError(
            "rate_limit", value, "is not a Redis URL", "redis://, rediss:// or unix:// URLs"
        )


@attrs.frozen(kw_only=True)
class LocalRateLimit:
    """The in-process rate budget (the default): this client learns the limit from 429s alone.

    ``max_rate``: requests/s to pace at from the start (and never exceed); None learns it.
    """

    max_rate: float | None = attrs.field(default=None, validator=_max_rate)

    def pacer(self, account: str) -> Pacer:
        """A new pacer for one client (``account`` is unused: nothing is shared)."""
        return AdaptiveRateLimiter(max_rate=self.max_rate)


@attrs.frozen
class RedisRateLimit:
    """A rate budget shared through Redis by every client of one account (needs ``[redis]``).

    ``url``: ``redis://host:6379/0`` (also ``rediss://``, ``unix://``). Clients with the same API
    key and base URL share one budget, kept under ``prefix`` plus a hash of the two (never the
    key itself); ``name`` replaces that hash, e.g. to share a budget across keys. ``max_rate``:
    requests/s to pace at from the start, all processes together (None learns it from 429s).
    ``timeout`` bounds every Redis call; when Redis fails or is slower, the client paces
    locally, logs one warning, and tries Redis again every ``retry_interval`` seconds.
    """

    url: str = attrs.field(validator=_redis_url)
    name: str | None = attrs.field(default=None, kw_only=True)
    prefix: str = attrs.field(default=DEFAULT_PREFIX, kw_only=True)
    max_rate: float | None = attrs.field(default=None, kw_only=True, validator=_max_rate)
    timeout: float = attrs.field(default=0.5, kw_only=True, validator=_positive)
    retry_interval: float = attrs.field(default=5.0, kw_only=True, validator=_positive)

    def pacer(self, account: str) -> Pacer:
        """A pacer drawing from the shared budget of ``account`` (see ``account_key``)."""
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise ValidationError(
                "rate_limit",
                self.url,
                "needs the redis package",
                "pip install 'nanobanana-async[redis]'",
            ) from None
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=_MAX_CONNECTIONS,  # callers beyond wait (within the timeout)
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # a failed call falls back at once, never retries
            health_check_interval=0,
        )
        client = Redis.from_pool(pool)  # closing the client closes its pool
        key = self.prefix + (self.name or account)
        return SharedPacer(
            client,
            key,
            max_rate=self.max_rate,
            timeout=self.timeout,
            retry_interval=self.retry_interval,
            where=_safe_url(self.url),
        )


RateLimit = LocalRateLimit | RedisRateLimit


def account_key(base_url: str, api_key: str) -> str:
    """The name of an account's shared budget: a hash of base URL and key (not the key)."""
    digest = hashlib.sha256(f"{base_url}\0{api_key}".encode()).hexdigest()
    return digest[:24]


def make_pacer(rate_limit: object, *, base_url: str, api_key: str) -> Pacer:
    """The pacer of a client for ``Client(rate_limit=...)``: None, a Redis URL or a config."""
    if rate_limit is None:
        rate_limit = LocalRateLimit()
    elif isinstance(rate_limit, str):
        rate_limit = RedisRateLimit(rate_limit)
    if not isinstance(rate_limit, (LocalRateLimit, RedisRateLimit)):
        raise ValidationError(
            "rate_limit",
            rate_limit,
            "must be None, a Redis URL, a LocalRateLimit or a RedisRateLimit",
        )
    return rate_limit.pacer(account_key(base_url, api_key))


def _safe_url(url: str) -> str:
    """The URL without any password, for log messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


# The pacing algorithm of PacingCore (see _pacer.py), run atomically on the Redis server for all
# the clients of one account. Times are the server's (TIME), so the clients' clocks never meet.
# ARGV: op, then PacingCore's constants, then the op's arguments:
#   reserve  <accepted>           a send slot: the wait in seconds (<= 0: send now, recorded)
#   confirm  <accepted> <epoch>   after sleeping: send now if no cut/hold came meanwhile, else
#                                 a new slot (as reserve)
#   throttle <accepted> <retry>   a 429 (retry < 0: no Retry-After): hold and cut, maybe
# Returns {wait, epoch, rate (0 = unlimited), hold remaining, aggregate send rate}, as strings.
_SCRIPT = """
local K = KEYS[1]
local op = ARGV[1]
local max_rate, min_rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local beta, recovery, probe = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local burst, cooldown, tau = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local margin, min_share, ttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local accepted_n, extra = tonumber(ARGV[13]), tonumber(ARGV[14])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local NEG = -1e18
local F = {'rate', 'tat', 'hold', 'hstart', 'held', 'epoch', 'lmax', 'lcut', 'crate', 'thr',
  'sa', 'sl', 'sf', 'aa', 'al', 'af', 'ra', 'rl', 'rf'}
local raw = redis.call('HMGET', K, unpack(F))
local s = {}
for i, name in ipairs(F) do s[name] = tonumber(raw[i]) end
if s.rate == nil and max_rate > 0 then s.rate = max_rate end
s.tat = s.tat or NEG
s.hold = s.hold or NEG
s.hstart = s.hstart or NEG
s.held = s.held or 0
s.epoch = s.epoch or 0
s.lmax = s.lmax or 0
s.lcut = s.lcut or NEG
s.crate = s.crate or 0
s.thr = s.thr or 0

local function active(at)
  return at - s.held - math.max(0, math.min(at, s.hold) - s.hstart)
end
local function madd(m, at, n)
  local acc, last, first = s[m .. 'a'] or 0, s[m .. 'l'], s[m .. 'f']
  if first == nil then
    first, last = at, at
  elseif at > last then
    acc = acc * math.exp(-(at - last) / tau)
    last = at
  end
  s[m .. 'a'], s[m .. 'l'], s[m .. 'f'] = acc + n, last, first
end
local function mrate(m, at)
  local first = s[m .. 'f']
  if first == nil then return 0 end
  local acc = (s[m .. 'a'] or 0) * math.exp(-math.max(0, at - s[m .. 'l']) / tau)
  local seen = 1 - math.exp(-math.max(at - first, 0.001) / tau)
  return acc / (tau * seen)
end
local function set_rate(r)
  r = math.max(r, min_rate)
  if max_rate > 0 then r = math.min(r, max_rate) end
  s.rate = r
end
local function curve(at)
  local w, dt = s.lmax, at - s.lcut
  if dt <= recovery then
    local x = dt / recovery - 1
    return w + (w - s.crate) * x * x * x
  end
  local x = (dt - recovery) / probe
  return w * (1 + (1 - beta) * x * x * x)
end
local function on_success(n)
  if n <= 0 then return end
  madd('a', now, n)
  if s.rate == nil or s.lmax <= 0 then return end
  local r = curve(now)
  set_rate(math.min(r, math.max(2 * mrate('s', active(now)), s.crate)))
end
local function reserve()
  local start = math.max(now, s.hold)
  if s.rate == nil then return start - now end
  local interval = 1 / s.rate
  local slot = math.max(s.tat, start - (burst - 1) * interval)
  s.tat = slot + interval
  return math.max(slot, start) - now
end
local function on_throttle(retry_after)
  s.thr = s.thr + 1
  -- Responses keep arriving during a hold: the service's answers are counted in real time
  -- (PacingCore counts them in time off hold, which overstates them when, with many clients,
  -- short holds follow each other).
  madd('r', now, 1)
  local refused, accepted = mrate('r', now), mrate('a', now)
  if refused < min_share * (refused + accepted) then return end
  if retry_after > 0 then
    local h = now + retry_after
    if h > s.hold then
      if now >= s.hold then
        s.held = s.held + math.max(0, s.hold - s.hstart)
        s.hstart = now
      end
      s.hold = h
    end
  end
  if now - s.lcut < cooldown then return end
  local base = mrate('s', active(now))
  if s.rate ~= nil then base = math.min(base, s.rate) end
  -- The accepted rate estimates the limit once it rests on a few responses (the clients report
  -- theirs with their next call: the first ones arrive in clumps). While it rests on less than
  -- one window it is raised by its relative error: guessing high costs a few 429s and another
  -- cut, guessing low would pace every client of the account low for the whole probe time.
  local age, count = now - (s.af or now), s.aa or 0
  if age >= 0.1 and count >= 5 and accepted > 0 then
    if age < tau then accepted = accepted * (1 + 1 / math.sqrt(count)) end
    if accepted < base then base = accepted end
  end
  base = math.max(base, min_rate)
  s.lmax = base * margin
  s.lcut = now
  s.crate = base * beta
  set_rate(s.crate)
  s.tat = now
  s.epoch = s.epoch + 1
end

on_success(accepted_n)
local wait = 0
if op == 'throttle' then
  on_throttle(extra)
elseif op == 'confirm' and extra == s.epoch and now >= s.hold then
  wait = 0
else
  wait = reserve()
end
if op ~= 'throttle' and wait <= 0 then madd('s', active(now), 1) end

local out = {}
for _, name in ipairs(F) do
  if s[name] ~= nil then
    out[#out + 1] = name
    out[#out + 1] = string.format('%.17g', s[name])
  end
end
redis.call('HSET', K, unpack(out))
redis.call('EXPIRE', K, ttl)
local function str(x) return string.format('%.17g', x) end
return {str(wait), str(s.epoch), str(s.rate or 0), str(math.max(0, s.hold - now)),
  str(mrate('s', active(now)))}
"""

# The cut (a share of the estimated limit) and the margin kept below it: PacingCore's are 0.7 and
# 0.93; an estimate resting on every client's answers can cut less deep and keep closer.
_BETA = 0.8
_MARGIN = 0.97
# A 429 share above this is the account's limit, not a stray 429 (PacingCore: 10%, since a
# lone client cannot tell; the clients of a shared budget are the account's traffic).
_MIN_SHARE_429 = 0.02
# What a local fallback may take of the last shared rate at least, when this process's share of
# the sends is not known (it had sent nothing yet).
_MIN_SHARE = 0.05


class SharedPacer:
    """A pacer whose slots, learned rate and hold live in Redis (see the module docstring)."""

    def __init__(
        self,
        client: Redis,
        key: str,
        *,
        max_rate: float | None = None,
        min_rate: float = 0.5,
        timeout: float = 0.5,
        retry_interval: float = 5.0,
        where: str = "redis",
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._redis = client
        self._script = client.register_script(_SCRIPT)
        self._key = key
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._where = where
        self._clock = clock
        self._sleep = sleep
        # The local pacer: it counts this process's sends (its share of the aggregate), and
        # it paces alone whenever Redis cannot be reached.
        self._local = AdaptiveRateLimiter(max_rate=max_rate, min_rate=min_rate, clock=clock)
        core = self._local.core
        self._constants = [
            core.max_rate or 0,
            core.min_rate,
            _BETA,
            core.recovery_time,
            core.probe_time,
            core.burst,
            core.cooldown,
            core.rate_window * 2,
            _MARGIN,
            _MIN_SHARE_429,
            STATE_TTL,
        ]
        self._shared = True
        self._retry_at = -math.inf
        self._probing = False
        self._warned = False
        self._pending_ok = 0
        self._rate: float | None = max_rate
        self._hold_until = -math.inf
        self._aggregate = 0.0
        self._throttled = 0
        self._fallbacks = 0
        self._reports: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        mode = "shared" if self._shared else "local (Redis unreachable)"
        return f"<SharedPacer {self._where} {mode}>"

    # -- the Pacer protocol -----------------------------------------------------------------

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Read time from ``clock`` from now on (e.g. the running loop's ``time``)."""
        self._clock = clock
        self._local.use_clock(clock)

    async def acquire(self) -> None:
        """Wait for a send slot of the shared budget (of the local one while Redis is down)."""
        if not self._shared and not self._may_probe():
            await self._local.acquire()
            return
        probing = not self._shared
        if probing:
            self._probing = True
        try:
            reply = await self._call("reserve", 0)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: pace locally instead
            self._degrade(exc)
            await self._local.acquire()
            return
        finally:
            if probing:
                self._probing = False
        if probing:
            self._restore()
        wait, epoch = reply
        while wait > 0:
            await self._sleep(wait)
            try:
                wait, epoch = await self._call("confirm", epoch)
            except Exception as exc:  # noqa: BLE001 - any Redis failure: pace locally instead
                # Not a send on the shared slot: the others may pace alone already, and the
                # slots reserved before Redis failed would come on top of their pace.
                self._degrade(exc)
                await self._local.acquire()
                return
        self._local.core.record_send(self._clock())

    def on_success(self) -> None:
        """A response that was not a 429 (counted in Redis with the next call)."""
        if self._shared:
            self._pending_ok += 1
        self._local.on_success()

    def on_throttle(self, retry_after: float | None = None) -> None:
        """A 429: reported to Redis at once, in the background (every client slows down)."""
        self._throttled += 1
        if not self._shared:
            self._local.on_throttle(retry_after)
            return
        if self._closed:
            return
        try:
            task = asyncio.get_running_loop().create_task(self._report_throttle(retry_after))
        except RuntimeError:  # no running loop: nothing can be sent anyway
            return
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    @property
    def rate(self) -> float | None:
        """The allowed requests/s of the whole account (this process's while Redis is down)."""
        return self._rate if self._shared else self._local.rate

    # -- inspection -------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """True while the budget is shared (False: Redis failed, pacing locally)."""
        return self._shared

    @property
    def throttled(self) -> int:
        """Number of 429s this client saw."""
        return self._throttled

    @property
    def fallbacks(self) -> int:
        """How many times this client fell back to local pacing."""
        return self._fallbacks

    async def aclose(self) -> None:
        """Stop the background reports and close the Redis connections (bounded)."""
        self._closed = True
        for task in list(self._reports):
            task.cancel()
        with anyio.move_on_after(self._timeout):
            await self._redis.aclose()

    # -- Redis --------------------------------------------------------------------------------

    async def _call(self, op: str, extra: float) -> tuple[float, int]:
        accepted, self._pending_ok = self._pending_ok, 0
        args: list[Any] = [op, *self._constants, accepted, extra]
        try:
            with anyio.fail_after(self._timeout):
                reply = await self._script(keys=[self._key], args=args)
        except BaseException:
            self._pending_ok += accepted  # not counted: try again with the next call
            raise
        wait, epoch, rate, hold, aggregate = (float(x) for x in reply)
        self._rate = rate if rate > 0 else None
        self._hold_until = self._clock() + hold
        self._aggregate = aggregate
        return wait, int(epoch)

    async def _report_throttle(self, retry_after: float | None) -> None:
        extra = retry_after if retry_after is not None and math.isfinite(retry_after) else -1.0
        try:
            await self._call("throttle", extra)
        except Exception as exc:  # noqa: BLE001 - background work: never raised anywhere
            self._degrade(exc)
            self._local.on_throttle(retry_after)

    def _may_probe(self) -> bool:
        return not self._probing and not self._closed and self._clock() >= self._retry_at

    def _degrade(self, exc: BaseException) -> None:
        """Redis failed: pace locally from now on, at this process's share of the last rate."""
        now = self._clock()
        self._retry_at = now + self._retry_interval
        if not self._shared:
            return
        self._shared = False
        self._fallbacks += 1
        self._pending_ok = 0  # answers of the shared pace: not this pacer's to learn from
        core = self._local.core
        if self._rate is not None:
            mine = core.measured_rate(now)
            share = mine / self._aggregate if self._aggregate > 0 else 0.0
            seed = max(core.min_rate, self._rate * min(1.0, max(share, _MIN_SHARE)))
            if core.max_rate is not None:
                seed = min(seed, core.max_rate)
            core.fill_rate = seed
            core.last_max = seed
            core.last_cut = now - core.recovery_time
            core.next_free = now
            core.epoch += 1
        if self._hold_until > now:
            core.hold_until = max(core.hold_until, self._hold_until)
        rate = "unlimited" if core.fill_rate is None else f"{core.fill_rate:.3g} req/s"
        log = logger.warning if not self._warned else logger.info
        self._warned = True
        log(
            "shared rate limit: Redis at %s failed (%s); pacing this process alone (%s) and "
            "trying Redis again every %g s",
            self._where,
            _describe(exc),
            rate,
            self._retry_interval,
        )

    def _restore(self) -> None:
        if not self._shared:
            self._shared = True
            logger.info(
                "shared rate limit: Redis at %s is back; pacing is shared again", self._where
            )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
