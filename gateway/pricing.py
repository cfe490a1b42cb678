"""What a call cost: a price per model (USD per million tokens) applied to its usage.

Prices come from the ``[pricing.<model>]`` tables of the TOML file, over the dated
defaults for the built-in models (``DEFAULT_PRICES``). A model is priced by its public
name: the one that answered, after a fallback. A model with no price costs 0 and is
reported as unpriced, so an operator sees what the totals leave out.
"""

from __future__ import annotations

from dataclasses import dataclass

from providers.base import Usage

MILLION = 1_000_000
# Money in answers is rounded to this many decimal places: a hundred-millionth of a dollar
# is below any list price's resolution for one token, and it hides float sums' noise.
USD_PLACES = 8


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. Cached input (a prompt-cache read) costs its own price
    when the provider discounts it, else the input price; tokens written to a prompt
    cache are billed as input."""

    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_tokens or 0, usage.prompt_tokens)
        cached_price = (self.cached_input_per_million
                        if self.cached_input_per_million is not None
                        else self.input_per_million)
        return ((usage.prompt_tokens - cached) * self.input_per_million
                + cached * cached_price
                + usage.completion_tokens * self.output_per_million) / MILLION


# The built-in models' list prices, taken 2026-11-30 from OpenAI's, Anthropic's and
# Together's pricing pages (the README's "Prices" names the upstream models and sources);
# the offline demo models are free.
DEFAULT_PRICES: dict[str, Price] = {
    "gateway-demo": Price(0.0, 0.0),
    "gateway-demo-embed": Price(0.0, 0.0),
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "claude-opus": Price(15.00, 75.00, 1.50),
    "claude-sonnet": Price(3.00, 15.00, 0.30),
    "claude-haiku": Price(1.00, 5.00, 0.10),
    "llama-3-70b": Price(0.88, 0.88),
    "llama-3-8b": Price(0.20, 0.20),
}


class PriceTable:
    """The price of each public model name; built once in the lifespan."""

    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = dict(prices)

    def price(self, model: str) -> Price | None:
        return self._prices.get(model)

    def priced(self, model: str) -> bool:
        return model in self._prices

    def cost(self, model: str, usage: Usage) -> float:
        """``usage``'s cost in USD at ``model``'s price; 0 for an unpriced model."""
        price = self._prices.get(model)
        return price.cost(usage) if price is not None else 0.0


def usd(amount: float) -> float:
    """An amount of USD as answers show it (rounded to ``USD_PLACES``)."""
    return round(amount, USD_PLACES) + 0.0  # + 0.0: never a "-0.0"


def price_table(configured: dict[str, Price]) -> PriceTable:
    """The defaults, overridden model by model by the configured prices."""
    return PriceTable({**DEFAULT_PRICES, **configured})
