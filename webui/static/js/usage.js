// The "Usage" dialog: plan limits (/auth/me), this minute's budget and the spend budgets
// (/rate-limit), and 30-day statistics (/stats) with what they cost (spend.js). The last
// two are optional: their cards hide on 404.
// Field names are read defensively (several spellings) because those APIs are young.

import { api, optionalApi } from "./api.js";
import { $, h, ms, num, percent, say, shortDate } from "./dom.js";
import { spendByDay, spendCell, spendTotal, unpricedNote, usd } from "./spend.js";

const AVG_TIME = ["avg_response_time_ms", "avg_processing_time_ms", "avg_latency_ms"];

/** The first of several field names that is present on obj. */
function pick(obj, ...names) {
  if (!obj || typeof obj !== "object") return undefined;
  for (const name of names) if (obj[name] !== undefined && obj[name] !== null) return obj[name];
  return undefined;
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.map(([label, value]) =>
    h("div", {}, h("dt", { text: label }), h("dd", { text: value }))));
}

function featureChips(features) {
  const chips = [];
  if (Array.isArray(features)) chips.push(...features.map(String));
  else if (features && typeof features === "object") {
    for (const [key, value] of Object.entries(features)) {
      // The plan's model patterns may name models this gateway does not serve: the
      // models card says what this user can actually call.
      if (key === "models") continue;
      const name = key.replace(/_/g, " ");
      if (value === true) chips.push(name);
      else if (Array.isArray(value)) chips.push(`${name}: ${value.join(", ")}`);
      else if (value !== false && value !== null) chips.push(`${name}: ${value}`);
    }
  }
  return chips.length ? h("div", { class: "features" },
    chips.map((text) => h("span", { class: "badge", text }))) : null;
}

function meter(label, used, limit, ...detail) {
  const fill = h("div", { class: "meter-fill" });
  const ratio = Number(limit) > 0 ? Math.max(0, Math.min(1, Number(used) / Number(limit))) : 0;
  fill.style.width = `${(ratio * 100).toFixed(1)}%`;
  return h("div", { class: "meter" },
    h("div", { class: "meter-head" }, h("span", { text: label }),
      h("span", { class: "muted" }, ...detail)),
    h("div", { class: "meter-track", "aria-hidden": "true" }, fill));
}

const resetText = (seconds) => `resets in ${Math.max(0, Math.ceil(seconds))} s`;

function renderPlan(body, me) {
  const plan = me.plan || {};
  const price = Number(plan.price_monthly);
  body.replaceChildren(kv([
    ["Plan", String(plan.name || me.subscription_tier || "—")],
    ["Price", !Number.isFinite(price) ? "—" : price === 0 ? "Free" : `$${num(price, 2)} / month`],
    ["Requests / minute", num(plan.requests_per_minute)],
    ["Tokens / minute", num(plan.tokens_per_minute)],
    ["Concurrent requests", num(plan.concurrent_requests)],
  ]), featureChips(plan.features) || "");
}

function budget(label, bucket, fallbackLimit) {
  const limit = pick(bucket, "limit") ?? fallbackLimit;
  const remaining = pick(bucket, "remaining");
  const reset = pick(bucket, "reset_seconds", "reset_in", "reset");
  const detail = [`${num(remaining)} of ${num(limit)} left`];
  if (reset !== undefined && Number(remaining) < Number(limit)) {
    // The countdown ticks in the page (see createUsage) towards this moment.
    const at = Date.now() + Number(reset) * 1000;
    detail.push(" · ", h("span", { class: "reset", dataset: { resetAt: String(at) },
      text: resetText(Number(reset)) }));
  }
  return meter(label, remaining, limit, ...detail);
}

function renderLimits(body, rl) {
  const limits = rl.limits || {};
  const concurrent = rl.concurrent || {};
  const cLimit = pick(concurrent, "limit") ?? limits.concurrent_requests;
  const inUse = pick(concurrent, "in_use", "active", "used") ?? 0;
  body.replaceChildren(
    budget("Requests", rl.requests, limits.requests_per_minute),
    budget("Tokens", rl.tokens, limits.tokens_per_minute),
    meter("Concurrent requests", inUse, cLimit, `${num(inUse)} of ${num(cLimit)} in use`));
}

const PERIOD_WORDS = { day: "daily", month: "monthly", total: "total" };

/** One spend budget from /rate-limit: spent of budget, what remains, when it resets. */
function budgetMeter(b) {
  const owner = b.scope === "key" ? `API key “${b.name}”` : `${b.name} plan`;
  const detail = [`${usd(b.spent_usd)} of ${usd(b.budget_usd)} spent · `
    + `${usd(b.remaining_usd)} left · `];
  if (b.resets_at) {
    const at = new Date(b.resets_at);
    detail.push(h("time", { class: "budget-reset", datetime: b.resets_at,
      text: `resets ${at.toLocaleString(undefined,
        { dateStyle: "medium", timeStyle: "short", timeZone: "UTC" })} UTC` }));
  } else {
    detail.push("never resets");
  }
  return meter(`${owner} · ${PERIOD_WORDS[b.period] || b.period}`, b.spent_usd, b.budget_usd,
    ...detail);
}

/** The budgets card: shown when /rate-limit lists at least one budget. */
function renderBudgets(card, rl) {
  const list = Array.isArray(rl?.budgets) ? rl.budgets : [];
  card.hidden = !list.length;
  if (list.length) card.querySelector(".card-body").replaceChildren(...list.map(budgetMeter));
}

function byModelTable(rows) {
  if (!Array.isArray(rows) || !rows.length) return null;
  const costs = rows.some((r) => r && (r.cost_usd !== undefined || r.priced !== undefined));
  const heads = ["Model", "Requests", "Tokens", ...(costs ? ["Cost"] : []), "Avg time"];
  return h("table", { class: "table" },
    h("caption", { class: "visually-hidden", text: "Requests by model" }),
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows.map((r) => {
      const tokens = pick(r, "total_tokens", "tokens")
        ?? ((Number(pick(r, "prompt_tokens")) || 0) + (Number(pick(r, "completion_tokens")) || 0));
      return h("tr", {},
        h("td", { text: String(pick(r, "model", "name") ?? "—") }),
        h("td", { text: num(pick(r, "requests", "total_requests", "count")) }),
        h("td", { text: num(tokens) }),
        costs ? spendCell(r) : "",
        h("td", { text: ms(pick(r, ...AVG_TIME)) }));
    })));
}

function byDayBars(rows) {
  if (!Array.isArray(rows) || !rows.length) return null;
  const days = rows.map((r) => ({ day: pick(r, "day", "date"), cost: r.cost_usd,
    value: Number(pick(r, "requests", "total_requests", "count")) || 0 }));
  const max = Math.max(1, ...days.map((d) => d.value));
  const busiest = days.reduce((a, b) => (b.value > a.value ? b : a));
  const bars = h("div", { class: "bars", role: "img",
    "aria-label": `Requests per day; busiest ${shortDate(busiest.day)}: ${num(busiest.value)}.` },
  days.map((d) => {
    const spent = d.cost === undefined ? "" : `, ${usd(d.cost)}`;
    const bar = h("div", { class: "bar",
      title: `${shortDate(d.day)}: ${num(d.value)} requests${spent}` });
    bar.style.height = `${Math.max(2, (d.value / max) * 100)}%`;
    return bar;
  }));
  return h("div", {}, bars, h("div", { class: "bars-caption", "aria-hidden": "true" },
    h("span", { text: shortDate(days[0].day) }), h("span", { text: shortDate(days.at(-1).day) })));
}

function renderStats(body, s) {
  const totals = s.totals && typeof s.totals === "object" ? { ...s, ...s.totals } : s;
  const requests = pick(totals, "total_requests", "requests");
  if (!Number(requests)) {
    body.replaceChildren(h("p", { class: "muted", text: "No requests in this period yet." }));
    return;
  }
  body.replaceChildren(kv([
    ["Requests", num(requests)],
    ["Success rate", percent(pick(totals, "success_rate"))],
    ["Avg response time", ms(pick(totals, ...AVG_TIME))],
    ["Avg first token", ms(pick(totals, "avg_time_to_first_token_ms", "avg_ttft_ms"))],
    ["Prompt tokens", num(pick(totals, "prompt_tokens"))],
    ["Completion tokens", num(pick(totals, "completion_tokens"))],
    spendTotal(s.totals),
  ].filter(Boolean)), byModelTable(s.by_model) || "", unpricedNote(s) || "",
  byDayBars(s.by_day) || "", spendByDay(s.by_day) || "");
}

/** The models this user can call: /v1/models (the plan's models that are served here). */
function renderModels(body, listed, rl) {
  const ids = (Array.isArray(listed?.data) ? listed.data : [])
    .map((m) => m && m.id).filter((id) => typeof id === "string");
  const locked = Array.isArray(rl?.models?.not_in_plan) ? rl.models.not_in_plan : [];
  body.replaceChildren(
    ids.length ? h("div", { class: "features" },
      ids.map((id) => h("span", { class: "badge", text: id })))
      : h("p", { class: "muted", text: "No model is available to you." }),
    locked.length ? h("p", { class: "muted small models-locked",
      text: `Served here but not in your plan: ${locked.join(", ")}.` }) : "");
}

export function createUsage() {
  const dialog = $("usage-dialog");
  const errorNote = $("usage-error");
  const cards = { plan: $("usage-plan"), models: $("usage-models"), limits: $("usage-limits"),
    stats: $("usage-stats"), budgets: $("usage-budgets") };
  const body = (card) => card.querySelector(".card-body");
  let ticker = 0;

  function stopCountdown() {
    clearInterval(ticker);
    ticker = 0;
  }

  /** Tick each reset countdown every second; at a reset, ask /rate-limit again. */
  function startCountdown() {
    stopCountdown();
    const resets = [...cards.limits.querySelectorAll("[data-reset-at]")];
    if (!resets.length) return;
    ticker = setInterval(() => {
      let due = false;
      for (const el of resets) {
        const left = (Number(el.dataset.resetAt) - Date.now()) / 1000;
        el.textContent = resetText(left);
        if (left <= 0) due = true;
      }
      if (due) refreshLimits();
    }, 1000);
  }

  async function refreshLimits() {
    stopCountdown();
    try {
      const rl = await optionalApi("/rate-limit");
      if (rl && dialog.open) {
        renderLimits(body(cards.limits), rl);
        startCountdown();
      }
    } catch (error) {
      if (error.status !== 401) say(errorNote, error.message || "Could not load the limits.");
    }
  }

  async function refresh() {
    say(errorNote, "");
    stopCountdown();
    const [me, rl, stats, listed] = await Promise.allSettled([
      api("/auth/me"), optionalApi("/rate-limit"), optionalApi("/stats?days=30"),
      api("/v1/models")]);
    const failures = [me, rl, stats, listed]
      .filter((r) => r.status === "rejected" && r.reason.status !== 401);
    if (failures.length) say(errorNote, failures[0].reason.message || "Could not load usage.");
    if (me.status === "fulfilled") renderPlan(body(cards.plan), me.value);
    cards.models.hidden = listed.status !== "fulfilled";
    if (!cards.models.hidden) {
      renderModels(body(cards.models), listed.value, rl.status === "fulfilled" ? rl.value : null);
    }
    cards.limits.hidden = !(rl.status === "fulfilled" && rl.value);
    if (!cards.limits.hidden) {
      renderLimits(body(cards.limits), rl.value);
      if (dialog.open) startCountdown();
    }
    renderBudgets(cards.budgets, rl.status === "fulfilled" ? rl.value : null);
    cards.stats.hidden = !(stats.status === "fulfilled" && stats.value);
    if (!cards.stats.hidden) renderStats(body(cards.stats), stats.value);
  }

  $("usage-refresh").addEventListener("click", refresh);
  dialog.addEventListener("close", stopCountdown);

  return {
    open() {
      if (!dialog.open) dialog.showModal();
      return refresh();
    },
    close() { if (dialog.open) dialog.close(); },
  };
}
