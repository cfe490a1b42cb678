// Small DOM and formatting helpers. Text always goes in via textContent, never innerHTML.

/** Create an element: h("button", {class: "btn", onclick: fn}, "Label", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const $ = (id) => document.getElementById(id);

/** Show a message in an element (hidden when empty). */
export function say(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

/** Mark an input invalid and show the message in its error element. */
export function fieldError(input, errorEl, message) {
  say(errorEl, message);
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/** A number with thousands separators; "—" when missing. */
export function num(value, digits = 0) {
  const n = Number(value);
  if (value === null || value === undefined || value === "" || !Number.isFinite(n)) return "—";
  return n.toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** 850 -> "850 ms", 1520 -> "1.5 s". */
export function ms(value) {
  const n = Number(value);
  if (value === null || value === undefined || !Number.isFinite(n)) return "—";
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(n < 10000 ? 1 : 0)} s`;
}

/** 0.97 or 97 -> "97%". */
export function percent(value) {
  const n = Number(value);
  if (value === null || value === undefined || !Number.isFinite(n)) return "—";
  const p = n <= 1 ? n * 100 : n;
  return `${p.toFixed(p >= 99.95 || p === 0 ? 0 : 1)}%`;
}

export function parseDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const d = typeof value === "number" ? new Date(value < 1e12 ? value * 1000 : value)
    : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "just now", "5 min ago", "3 h ago", else a short date. */
export function ago(value) {
  const d = parseDate(value);
  if (!d) return "";
  const s = (Date.now() - d.getTime()) / 1000;
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

export function shortDate(value) {
  const d = parseDate(value);
  return d ? d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" })
    : "—";
}

/** Copy text to the clipboard; falls back to selecting an input and execCommand. */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (!input) return false;
    input.focus();
    input.select();
    try { return document.execCommand("copy"); } catch { return false; }
  }
}

/**
 * A button that asks for a second click before acting ("Revoke" -> "Confirm revoke").
 * The first click arms it for a few seconds; Escape or blur disarms it.
 */
export function confirmButton({ label, confirmLabel, className = "btn small", ariaLabel,
  onConfirm }) {
  const btn = h("button", { type: "button", class: className, text: label,
    "aria-label": ariaLabel });
  let timer = null;
  const disarm = () => {
    clearTimeout(timer);
    timer = null;
    btn.classList.remove("confirming");
    btn.textContent = label;
    if (ariaLabel) btn.setAttribute("aria-label", ariaLabel);
  };
  btn.addEventListener("click", async () => {
    if (!timer) {
      btn.classList.add("confirming");
      btn.textContent = confirmLabel;
      btn.setAttribute("aria-label", confirmLabel);
      timer = setTimeout(disarm, 5000);
      return;
    }
    disarm();
    btn.disabled = true;
    try { await onConfirm(); } finally { btn.disabled = false; }
  });
  btn.addEventListener("keydown", (e) => { if (e.key === "Escape" && timer) disarm(); });
  btn.addEventListener("blur", () => { if (timer) setTimeout(() => timer && disarm(), 150); });
  return btn;
}

/** The show-once key panel: the full key in a read-only input with a Copy button. */
export function keyReveal(key, { title = "Copy your new key now", onDone } = {}) {
  const input = h("input", { readonly: true, value: key, "aria-label": "API key",
    spellcheck: "false", class: "key-value" });
  const status = h("span", { class: "reveal-status", role: "status" },
    "You won't be able to see it again.");
  const copy = h("button", { type: "button", class: "btn primary small", text: "Copy",
    onclick: async () => {
      const ok = await copyText(key, input);
      status.textContent = ok ? "Copied to the clipboard." : "Select the key and copy it.";
      if (ok) copy.textContent = "Copied";
    } });
  const done = onDone && h("button", { type: "button", class: "btn small", text: "Done",
    onclick: onDone });
  input.addEventListener("focus", () => input.select());
  return h("div", { class: "reveal" },
    h("p", { class: "reveal-title", text: title }),
    h("div", { class: "copy-row" }, input, copy),
    h("div", { class: "reveal-actions" }, status, done));
}
