"""Resilience building blocks for upstream calls: circuit breakers, load balancing over a
route's targets, and the retry/fallback policy. Pure and per process; the call path wires
them together."""

from gateway.resilience.balance import Balancer, Deployment, Strategy
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.policy import (
    RETRY_STATUSES,
    backoff,
    breaker_failure,
    context_overflow,
    retry_delay,
    retryable,
)

__all__ = [
    "RETRY_STATUSES",
    "Balancer",
    "CircuitBreaker",
    "Deployment",
    "Strategy",
    "backoff",
    "breaker_failure",
    "context_overflow",
    "retry_delay",
    "retryable",
]
