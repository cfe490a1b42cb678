// Spend in the Usage dialog (issue 16): what the calls cost, from /stats' cost_usd in its
// totals, per model and per day. A model the gateway has no price for costs 0 there, so it
// is marked as unpriced rather than shown as free. Kept apart from usage.js so other cards
// of the same dialog (budgets) grow without touching this one.

import { h, num, shortDate } from "./dom.js";

const CENTS = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD",
  minimumFractionDigits: 2, maximumFractionDigits: 2 });
// Below a dollar, a call costs fractions of a cent: three significant digits say how much.
const SMALL = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD",
  maximumSignificantDigits: 3 });

/** An amount of USD for people: "$12.34", "$0.000178", "$0.00"; "—" when not a number. */
export function usd(value) {
  const amount = Number(value);
  if (value === undefined || value === null || !Number.isFinite(amount)) return "—";
  if (amount === 0) return CENTS.format(0);
  return Math.abs(amount) >= 1 ? CENTS.format(amount) : SMALL.format(amount);
}

/** The names /stats says have no price (its unpriced_models, else by_model's priced). */
export function unpricedModels(stats) {
  if (Array.isArray(stats?.unpriced_models)) return stats.unpriced_models.map(String);
  const rows = Array.isArray(stats?.by_model) ? stats.by_model : [];
  return rows.filter((r) => r && r.priced === false).map((r) => String(r.model));
}

/** The totals' "Cost" line for the stats card's list, or null on a gateway without it. */
export function spendTotal(totals) {
  return totals && totals.cost_usd !== undefined ? ["Cost", usd(totals.cost_usd)] : null;
}

/** The by-model table's cost cell: the amount, or "no price" for an unpriced model. */
export function spendCell(row) {
  if (row?.priced === false) {
    return h("td", { class: "unpriced", title: "No price is set for this model: its calls count as $0.",
      text: "no price" });
  }
  return h("td", { text: usd(row?.cost_usd) });
}

/** A note under the table naming the unpriced models, so the total is read for what it is. */
export function unpricedNote(stats) {
  const names = unpricedModels(stats);
  if (!names.length) return null;
  return h("p", { class: "muted small unpriced-note",
    text: `Not in the cost: ${names.join(", ")} (no price set).` });
}

/** Each day that had calls: its tokens beside what they cost, newest first. */
export function spendByDay(rows) {
  if (!Array.isArray(rows) || !rows.some((r) => r && r.cost_usd !== undefined)) return null;
  const days = rows.filter((r) => Number(r.requests) > 0).reverse();
  if (!days.length) return null;
  return h("table", { class: "table spend-by-day" },
    h("caption", { class: "visually-hidden", text: "Tokens and cost by day" }),
    h("thead", {}, h("tr", {}, ["Day", "Requests", "Tokens", "Cost"].map(
      (t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, days.map((r) => h("tr", {},
      h("td", { text: shortDate(r.day) }),
      h("td", { text: num(r.requests) }),
      h("td", { text: num(r.total_tokens) }),
      h("td", { text: usd(r.cost_usd) })))));
}
