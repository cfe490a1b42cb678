"""Deployments (one upstream target each) and the order in which a call tries a route's
targets: weighted at random, or least busy first; targets whose breaker is not closed
always last.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from gateway.resilience.breaker import CircuitBreaker
from providers.base import CHAT, Provider

Strategy = Literal["weighted", "least-busy"]
STRATEGIES: tuple[Strategy, ...] = ("weighted", "least-busy")

# Sort keys over the tuples order() builds; the target itself is never compared (it has
# no order), so equal keys keep their drawn order.
_HEALTH_AND_RANK = itemgetter(0, 1)
_HEALTH_LOAD_AND_TIE = itemgetter(0, 1, 2)
_TARGET = itemgetter(-1)


@dataclass(eq=False, slots=True)
class Deployment:
    """One target (provider + upstream model), shared by every route that names it, so
    its breaker and in-flight count see all of its traffic in this process.

    ``in_flight`` is the number of calls using it now; the call path increments it when an
    attempt starts and decrements it when the attempt ends.
    """

    provider_name: str
    provider: Provider
    upstream: str
    max_retries: int
    breaker: CircuitBreaker
    in_flight: int = field(default=0)
    capabilities: frozenset[str] = frozenset({CHAT})  # providers.base.capabilities

    @property
    def name(self) -> str:
        """``provider/upstream``, as rows, headers and /admin/upstreams name it."""
        return f"{self.provider_name}/{self.upstream}"

    def snapshot(self) -> dict[str, Any]:
        """The target and its breaker, JSON-ready."""
        return {"name": self.name, "provider": self.provider_name, "upstream": self.upstream,
                "max_retries": self.max_retries, "in_flight": self.in_flight,
                **self.breaker.snapshot()}


class Balancer:
    """The order in which one call should try a route's targets."""

    __slots__ = ("_by_inverse", "_only", "_rng", "_targets", "_weights", "strategy")

    def __init__(self, strategy: Strategy, targets: Sequence[tuple[Deployment, float]],
                 rng: random.Random | None = None) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown balancing strategy {strategy!r}; "
                             f"use one of {', '.join(STRATEGIES)}")
        if not targets:
            raise ValueError("a balancer needs at least one target")
        for target, weight in targets:
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"target {target.name!r} has weight {weight!r}; "
                                 "weights must be positive numbers")
        self.strategy = strategy
        self._targets = tuple(target for target, _ in targets)
        self._weights = tuple(float(weight) for _, weight in targets)
        self._by_inverse = tuple((target, 1.0 / weight)
                                 for target, weight in zip(self._targets, self._weights,
                                                           strict=True))
        self._only = self._targets[0] if len(self._targets) == 1 else None
        self._rng = rng or random.Random()

    @property
    def targets(self) -> tuple[tuple[Deployment, float], ...]:
        """The targets with their weights, as configured."""
        return tuple(zip(self._targets, self._weights, strict=True))

    def order(self) -> list[Deployment]:
        """Every target once, best first. Targets whose breaker is not closed stay in the
        list, last: the call path asks their breaker, which may grant a half-open probe."""
        if self._only is not None:
            return [self._only]  # the common case, on every request: nothing to draw
        rand = self._rng.random
        # One sort over (health, rank, target) tuples: each breaker is asked once (its
        # state may change with the clock between asks), and closed ones sort first.
        if self.strategy == "weighted":
            # Efraimidis-Spirakis: sorting by u ** (1 / w) descending is weighted sampling
            # without replacement, so the first pick lands on each target in proportion
            # to its weight and the rest keep the same odds among themselves.
            keyed = [(target.breaker.state == "closed", rand() ** inverse, target)
                     for target, inverse in self._by_inverse]
            keyed.sort(key=_HEALTH_AND_RANK, reverse=True)
        else:
            # Fewest calls in flight first; a random tie-break spreads equal ones.
            keyed = [(target.breaker.state != "closed", target.in_flight, rand(), target)
                     for target in self._targets]
            keyed.sort(key=_HEALTH_LOAD_AND_TIE)
        return list(map(_TARGET, keyed))

    def snapshot(self) -> dict[str, Any]:
        """The strategy and each target with its weight, JSON-ready."""
        return {"strategy": self.strategy,
                "targets": [{**target.snapshot(), "weight": weight}
                            for target, weight in zip(self._targets, self._weights,
                                                      strict=True)]}
