"""Balancer.order over real deployments: the weighted draw matches its weights, targets
whose breaker is not closed come last, least-busy prefers idle targets, one target costs
nothing. Seeded draws, an injected clock for the breakers."""

from __future__ import annotations

import math
import random
from collections import Counter

import orjson
import pytest

from gateway.resilience.balance import Balancer, Deployment
from gateway.resilience.breaker import CircuitBreaker
from providers.base import ProviderConfig
from providers.demo import DemoProvider

DRAWS = 4000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def deployment(name: str, clock: Clock, *, upstream: str = "m") -> Deployment:
    provider = DemoProvider(ProviderConfig(name=name, kind="demo"))
    return Deployment(provider_name=name, provider=provider, upstream=upstream,
                      max_retries=2, breaker=CircuitBreaker(3, 30, clock))


def open_breaker(target: Deployment) -> None:
    for _ in range(target.breaker.failures):
        target.breaker.failure()
    assert target.breaker.state == "open"


def within_5_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_weighted_first_pick_follows_the_weights(clock) -> None:
    a, b = deployment("a", clock), deployment("b", clock)
    balancer = Balancer("weighted", [(a, 3), (b, 1)], random.Random(12345))
    orders = [balancer.order() for _ in range(DRAWS)]
    assert all(sorted(o, key=lambda t: t.name) == [a, b] for o in orders)  # each once
    first = Counter(o[0].name for o in orders)
    assert within_5_sigma(first["a/m"], DRAWS, 0.75), first


def test_weighted_order_is_sampling_without_replacement(clock) -> None:
    """With weights 5:3:2, whichever target is first, the other two follow in proportion
    to their own weights (the second pick is not uniform)."""
    a, b, c = (deployment(n, clock) for n in "abc")
    balancer = Balancer("weighted", [(a, 5), (b, 3), (c, 2)], random.Random(7))
    orders = [balancer.order() for _ in range(DRAWS)]
    first = Counter(o[0].provider_name for o in orders)
    for name, p in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert within_5_sigma(first[name], DRAWS, p), first
    after_a = [o[1].provider_name for o in orders if o[0] is a]
    assert within_5_sigma(after_a.count("b"), len(after_a), 0.6)


@pytest.mark.parametrize("strategy", ["weighted", "least-busy"])
def test_open_targets_are_never_first_while_a_closed_one_exists(clock, strategy) -> None:
    heavy, light, spare = (deployment(n, clock) for n in ("heavy", "light", "spare"))
    balancer = Balancer(strategy, [(heavy, 100), (light, 1), (spare, 1)], random.Random(3))
    open_breaker(heavy)
    heavy.in_flight, light.in_flight, spare.in_flight = 0, 7, 9  # heavy is also idlest
    for _ in range(500):
        order = balancer.order()
        assert order[0] is not heavy
        assert order[-1] is heavy  # still listed, for its breaker to decide
    clock.now += 30  # half-open: still not closed, still last
    assert heavy.breaker.state == "half_open"
    assert all(balancer.order()[-1] is heavy for _ in range(100))
    heavy.breaker.success()
    assert any(balancer.order()[0] is heavy for _ in range(100))


def test_when_every_breaker_is_open_all_targets_are_still_listed(clock) -> None:
    a, b = deployment("a", clock), deployment("b", clock)
    open_breaker(a)
    open_breaker(b)
    balancer = Balancer("weighted", [(a, 3), (b, 1)], random.Random(5))
    first = Counter(balancer.order()[0].name for _ in range(DRAWS))
    assert within_5_sigma(first["a/m"], DRAWS, 0.75), first  # the weights still rank them


def test_least_busy_picks_the_fewest_in_flight(clock) -> None:
    a, b, c = (deployment(n, clock) for n in "abc")
    a.in_flight, b.in_flight, c.in_flight = 5, 1, 3
    balancer = Balancer("least-busy", [(a, 1), (b, 1), (c, 1)], random.Random(1))
    assert all(balancer.order() == [b, c, a] for _ in range(50))
    b.in_flight = 6  # it took on calls meanwhile
    assert balancer.order() == [c, a, b]


def test_least_busy_spreads_ties(clock) -> None:
    a, b, c = (deployment(n, clock) for n in "abc")
    c.in_flight = 1
    balancer = Balancer("least-busy", [(a, 1), (b, 1), (c, 1)], random.Random(9))
    orders = [balancer.order() for _ in range(DRAWS)]
    assert all(o[2] is c for o in orders)
    assert within_5_sigma(sum(o[0] is a for o in orders), DRAWS, 0.5)


def test_a_single_target_is_returned_without_drawing(clock) -> None:
    class NoDraws(random.Random):
        def random(self) -> float:
            raise AssertionError("a single target needs no randomness")

    only = deployment("only", clock)
    for strategy in ("weighted", "least-busy"):
        balancer = Balancer(strategy, [(only, 1)], NoDraws())  # type: ignore[arg-type]
        first, second = balancer.order(), balancer.order()
        assert first == second == [only]
        assert first is not second  # the caller may consume its list
        open_breaker(only)
        assert balancer.order() == [only]  # open or not, its breaker decides
        only.breaker.success()


def test_deployments_shared_by_routes_share_breaker_and_load(clock) -> None:
    shared = deployment("a", clock, upstream="x")
    other = deployment("b", clock, upstream="y")
    route_1 = Balancer("least-busy", [(shared, 1), (other, 1)], random.Random(2))
    route_2 = Balancer("least-busy", [(shared, 1)], random.Random(2))
    shared.in_flight += 1  # a call on route 2
    assert route_1.order() == [other, shared]
    open_breaker(route_2.order()[0])
    other.in_flight = 10
    assert route_1.order() == [other, shared]


def test_snapshots_are_json_ready(clock) -> None:
    a, b = deployment("a", clock, upstream="x"), deployment("b", clock, upstream="y")
    a.in_flight = 2
    open_breaker(b)
    clock.now += 5
    balancer = Balancer("weighted", [(a, 3), (b, 1.5)])
    assert a.name == "a/x"
    snapshot = orjson.loads(orjson.dumps(balancer.snapshot()))
    assert snapshot == {"strategy": "weighted", "targets": [
        {"name": "a/x", "provider": "a", "upstream": "x", "max_retries": 2, "in_flight": 2,
         "weight": 3.0, "state": "closed", "consecutive_failures": 0, "failures_to_open": 3,
         "cooldown_seconds": 30, "retry_in_seconds": 0.0, "opened_for_seconds": None,
         "opens": 0},
        {"name": "b/y", "provider": "b", "upstream": "y", "max_retries": 2, "in_flight": 0,
         "weight": 1.5, "state": "open", "consecutive_failures": 3, "failures_to_open": 3,
         "cooldown_seconds": 30, "retry_in_seconds": 25.0, "opened_for_seconds": 5.0,
         "opens": 1}]}
    assert balancer.targets == ((a, 3.0), (b, 1.5))


@pytest.mark.parametrize(("strategy", "weights", "message"), [
    ("round-robin", [1], "unknown balancing strategy 'round-robin'"),
    ("weighted", [], "at least one target"),
    ("weighted", [1, 0], "weights must be positive"),
    ("weighted", [-1], "weights must be positive"),
    ("weighted", [float("nan")], "weights must be positive"),
    ("weighted", [float("inf")], "weights must be positive"),
])
def test_nonsense_configuration_is_refused(clock, strategy, weights, message) -> None:
    targets = [(deployment(f"p{i}", clock), w) for i, w in enumerate(weights)]
    with pytest.raises(ValueError, match=message):
        Balancer(strategy, targets)
