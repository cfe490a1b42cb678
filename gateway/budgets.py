"""Spend budgets on the request path: which apply to a caller, the 429, the status view.

The ledgers themselves (one per limiter backend) are in gateway/ratelimit/spend*.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.principal import Principal
from gateway.errors import APIError, retry_headers
from gateway.ratelimit.spend import Budget, Seeder, Spend, Window, to_nano, to_usd
from storage.spend import stored_spend

PERIOD_WORDS = {"day": "daily", "month": "monthly", "total": "total"}


def budgets_for(principal: Principal) -> tuple[Budget, ...]:
    """The key's own budget (if any), then the plan's monthly budget for the whole user."""
    budgets = []
    user = str(principal.user_id)
    if principal.key_budget_usd is not None and principal.api_key_id is not None:
        budgets.append(Budget("key", principal.key_name or "", user, str(principal.api_key_id),
                              principal.key_budget_period or "month",
                              to_nano(principal.key_budget_usd)))
    plan = principal.plan
    if plan.monthly_budget_usd is not None:
        budgets.append(Budget("plan", plan.name, user, None, "month",
                              to_nano(plan.monthly_budget_usd)))
    return tuple(budgets)


def stored_seeder(engine: AsyncEngine) -> Seeder:
    """Seeds a ledger from the stored calls' ``cost_usd`` (read from the primary: a
    replica may lag behind the rows just written)."""

    async def seed(budget: Budget, window: Window) -> int:
        return await stored_spend(
            engine, uuid.UUID(budget.user_id),
            api_key_id=uuid.UUID(budget.key_id) if budget.key_id is not None else None,
            start=window.start, end=window.end)

    return seed


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(nano: int) -> str:
    """Dollars as people read them: at least cents, more digits only when they matter."""
    text = f"{to_usd(nano):.9f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def describe(budget: Budget) -> str:
    """``API key 'ci'`` or ``the free plan``."""
    return f"API key '{budget.name}'" if budget.scope == "key" else f"the {budget.name} plan"


def refusal(spend: Spend, now: datetime) -> APIError:
    """The 429 for an exhausted budget, in OpenAI's shape (its code for an empty quota);
    a day or month budget says when it resets, a total one never does."""
    budget, end = spend.budget, spend.window.end
    message = (f"Budget exceeded: {describe(budget)} has spent {_money(spend.spent_nano)} "
               f"of its {PERIOD_WORDS[budget.period]} budget of "
               f"{_money(budget.limit_nano)}.")
    headers: dict[str, str] = {}
    if end is not None:
        message += f" It resets at {_iso(end)}."
        headers = retry_headers((end - now).total_seconds())
    else:
        message += " It does not reset: raise the budget or use another key."
    return APIError(429, message, type="insufficient_quota", code="insufficient_quota",
                    headers=headers)


def budget_view(spend: Spend) -> dict[str, Any]:
    """One budget as ``GET /rate-limit`` shows it (the web UI's contract)."""
    budget = spend.budget
    return {"scope": budget.scope, "name": budget.name, "period": budget.period,
            "budget_usd": to_usd(budget.limit_nano), "spent_usd": to_usd(spend.spent_nano),
            "remaining_usd": to_usd(spend.remaining_nano), "resets_at": _iso(spend.window.end)}
