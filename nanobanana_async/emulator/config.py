"""Configuration value objects: what the emulated service does, how fast, how it misbehaves."""

from __future__ import annotations

import math
import random

import attrs

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_KINDS",
    "ROUTES",
    "SIZE_FACTORS",
    "EmulatorConfig",
    "Faults",
    "ServiceTime",
    "TaskFaults",
    "Variants",
]

DEFAULT_MODELS = ("nano_banana_pro", "nano_banana", "nano_banana_2")
ROUTES = frozenset({"create", "status", "result", "cancel"})
# Larger outputs take longer on the real service; the factor scales the sampled service time.
SIZE_FACTORS = {"1K": 1.0, "2K": 1.5, "4K": 2.5}


def _non_negative(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attr.name} must be >= 0, got {value!r}")


def _probability(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attr.name} must be a probability in [0, 1], got {value!r}")


FAULT_KINDS = (
    "error_500",
    "error_502",
    "error_503",
    "error_504",
    "rate_limited_429",
    "reset",
    "stall",
    "malformed_json",
    "lost_create_response",
)


@attrs.frozen(kw_only=True)
class ServiceTime:
    """Distribution of the time a worker spends on one task, in (unscaled) seconds.

    Drift: tasks created `drift_at` (unscaled) seconds or more after the emulator started take
    `drift_factor` times the drawn time, a step change in the service's latency (`drifting`, or
    the suffix `@AT*FACTOR` of the text form, e.g. `lognormal:20,0.5@600*3`).
    """

    kind: str = attrs.field(
        default="fixed", validator=attrs.validators.in_(("fixed", "uniform", "lognormal"))
    )
    a: float = attrs.field(default=2.0, validator=_non_negative)
    b: float = attrs.field(default=0.0, validator=_non_negative)
    drift_at: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative)
    )
    drift_factor: float = attrs.field(default=1.0, validator=_non_negative)

    @classmethod
    def fixed(cls, seconds: float) -> ServiceTime:
        """Every task takes exactly `seconds`."""
        return cls(kind="fixed", a=seconds)

    @classmethod
    def uniform(cls, lo: float, hi: float) -> ServiceTime:
        """Tasks take a uniformly drawn time in [lo, hi]."""
        if hi < lo:
            raise ValueError("uniform service time needs lo <= hi")
        return cls(kind="uniform", a=lo, b=hi)

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> ServiceTime:
        """Tasks take a log-normally drawn time with this median and shape `sigma`."""
        if median <= 0:
            raise ValueError("lognormal service time needs median > 0")
        return cls(kind="lognormal", a=median, b=sigma)

    def drifting(self, *, at: float, factor: float) -> ServiceTime:
        """This distribution, `factor` times slower for tasks created from `at` s after start."""
        return attrs.evolve(self, drift_at=at, drift_factor=factor)

    @classmethod
    def parse(cls, text: str) -> ServiceTime:
        """Parse the command-line form `fixed:2`, `uniform:1,3` or `lognormal:20,0.5`.

        A suffix `@AT*FACTOR` adds a drift: `lognormal:20,0.5@600*3` triples the time of the
        tasks created from 600 (unscaled) seconds after the start.
        """
        base, at_sign, drift = text.partition("@")
        kind, _, args = base.partition(":")
        try:
            nums = [float(x) for x in args.split(",")] if args else []
            at_text, star, factor_text = drift.partition("*")
            at = float(at_text) if at_sign else None
            factor = float(factor_text) if at_sign and star else 1.0
        except ValueError:
            raise ValueError(f"bad service time {text!r}") from None
        if at_sign and not star:
            raise ValueError(f"bad service time {text!r}: the drift is @AT*FACTOR")
        if kind == "fixed" and len(nums) == 1:
            parsed = cls.fixed(nums[0])
        elif kind == "uniform" and len(nums) == 2:
            parsed = cls.uniform(nums[0], nums[1])
        elif kind == "lognormal" and len(nums) == 2:
            parsed = cls.lognormal(nums[0], nums[1])
        else:
            raise ValueError(
                f"bad service time {text!r}: use fixed:S, uniform:LO,HI or lognormal:MED,SIGMA"
                " (optionally followed by @AT*FACTOR)"
            )
        return parsed if at is None else parsed.drifting(at=at, factor=factor)

    def sample(self, rng: random.Random, elapsed: float = 0.0) -> float:
        """Draw one service time from `rng` (the emulator's service-time stream).

        `elapsed`: unscaled seconds since the emulator started, for the drift.
        """
        if self.kind == "uniform":
            drawn = rng.uniform(self.a, self.b)
        elif self.kind == "lognormal":
            drawn = rng.lognormvariate(math.log(self.a), self.b)
        else:
            drawn = self.a
        if self.drift_at is not None and elapsed >= self.drift_at:
            drawn *= self.drift_factor
        return drawn


@attrs.frozen(kw_only=True)
class Faults:
    """Per-request fault probabilities; at most one fault is injected per request."""

    error_500: float = attrs.field(default=0.0, validator=_probability)
    error_502: float = attrs.field(default=0.0, validator=_probability)
    error_503: float = attrs.field(default=0.0, validator=_probability)
    error_504: float = attrs.field(default=0.0, validator=_probability)
    rate_limited_429: float = attrs.field(default=0.0, validator=_probability)
    reset: float = attrs.field(default=0.0, validator=_probability)
    stall: float = attrs.field(default=0.0, validator=_probability)
    malformed_json: float = attrs.field(default=0.0, validator=_probability)
    lost_create_response: float = attrs.field(default=0.0, validator=_probability)
    retry_after_seconds: float = attrs.field(default=1.0, validator=_non_negative)
    stall_seconds: float = attrs.field(default=60.0, validator=_non_negative)
    routes: frozenset[str] = attrs.field(default=ROUTES, converter=frozenset)

    @routes.validator
    def _check_routes(self, _attr: attrs.Attribute[frozenset[str]], value: frozenset[str]) -> None:
        if not value <= ROUTES:
            raise ValueError(f"unknown fault routes {sorted(value - ROUTES)}; use {sorted(ROUTES)}")

    def kinds(self) -> tuple[tuple[str, float], ...]:
        """The (kind, probability) pairs in the fixed order used to map one draw onto a fault."""
        return tuple((name, getattr(self, name)) for name in FAULT_KINDS)


@attrs.frozen(kw_only=True)
class TaskFaults:
    """Probabilities that an accepted task ends COMPLETED with this error_type.

    `no_image` is not a failure: the task succeeds but its result carries no image, only a text
    refusal (when Text was asked for) and `metadata.finish_reason` `SAFETY`, as a prompt containing
    `[no-image]` always does.
    """

    inference_failure: float = attrs.field(default=0.0, validator=_probability)
    inference_timeout: float = attrs.field(default=0.0, validator=_probability)
    content_blocked: float = attrs.field(default=0.0, validator=_probability)
    request_invalid: float = attrs.field(default=0.0, validator=_probability)
    no_image: float = attrs.field(default=0.0, validator=_probability)

    def kinds(self) -> tuple[tuple[str, float], ...]:
        """The (error_type, probability) pairs in the fixed order used to map one draw."""
        return (
            ("INFERENCE_FAILURE", self.inference_failure),
            ("INFERENCE_TIMEOUT", self.inference_timeout),
            ("CONTENT_BLOCKED", self.content_blocked),
            ("REQUEST_INVALID", self.request_invalid),
        )


@attrs.frozen(kw_only=True)
class Variants:
    """Wire variants "seen in the wild" that a tolerant client must accept; all off by default.

    `failure_with_outputs`: the result route of a task that failed (or was cancelled) answers
    HTTP 200, not 400, with `"outputs": []` next to `error` and `error_type`; under `error_object`
    the error's `code` is then the provider's (`InvalidParameter` for `REQUEST_INVALID`), not the
    `error_type`.
    """

    lowercase_status: bool = False
    queued_synonym: bool = False
    id_field: bool = False
    error_object: bool = False
    status_202: bool = False
    create_status_field: bool = False
    minimal_create: bool = False
    foreign_urls: bool = False
    no_202_result: bool = False
    failure_with_outputs: bool = False


_DEFAULT_SERVICE_TIME = ServiceTime.fixed(2.0)


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """Everything the emulator does; immutable, replace it with `Emulator.reconfigure`.

    `credits`: creates payable before every create answers 402 (None: unlimited); top up with
    `Emulator.add_credits`. `revoke_after_creates`: the key is revoked (401 on every route) once
    this many more creates were accepted; `Emulator.restore_key` undoes it. Request ids are unique
    across restarts; `deterministic_ids=True` makes them a function of `seed` alone.
    """

    api_key: str = "emulator-key"
    host: str = "127.0.0.1"
    port: int = 0
    cdn_port: int = 0
    models: tuple[str, ...] = attrs.field(default=DEFAULT_MODELS, converter=tuple)
    workers: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    service_time: ServiceTime = _DEFAULT_SERVICE_TIME
    time_scale: float = attrs.field(default=1.0, validator=_non_negative)
    retention: float = attrs.field(default=3600.0, validator=_non_negative)
    seed: int = 0
    rate_limit: float | None = None
    rate_burst: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    credits: int | None = None
    revoke_after_creates: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    deterministic_ids: bool = False
    faults: Faults = Faults()
    task_faults: TaskFaults = TaskFaults()
    variants: Variants = Variants()
