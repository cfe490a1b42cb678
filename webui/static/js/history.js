// The sidebar's request history: search, pages, delete, open into the chat.
// Hidden entirely when this gateway has no /history endpoint.

import { api, optionalApi } from "./api.js";
import { $, ago, confirmButton, h, say } from "./dom.js";

const PAGE = 20;

/** What to call a history entry: the question asked in that call (the server's preview). */
function summary(item) {
  const text = String(item.prompt_preview ?? item.prompt ?? "").replace(/\s+/g, " ").trim();
  return text || "(no prompt)";
}

/** Wire the history list; onOpen(item) gets the full item (GET /history/{id} when it exists). */
export function createHistory({ onOpen }) {
  const section = $("history");
  const list = $("history-list");
  const search = $("history-search");
  const more = $("history-more");
  const emptyNote = $("history-empty");
  const errorNote = $("history-error");
  let cursor = null;
  let query = "";
  let ticket = 0;
  let debounce = null;
  let refreshTimer = null;

  function updateEmpty() {
    emptyNote.textContent = query ? "Nothing matches your search." : "No requests yet.";
    emptyNote.hidden = list.children.length > 0;
  }

  async function open(item) {
    let full = item;
    if (item.id !== undefined && !Array.isArray(item.messages)) {
      try {
        full = (await optionalApi(`/history/${encodeURIComponent(item.id)}`)) || item;
      } catch { /* the list entry is enough */ }
    }
    onOpen(full);
  }

  function row(item) {
    const text = summary(item);
    const short = text.length > 40 ? `${text.slice(0, 40)}…` : text;
    const details = [item.model, ago(item.created_at)];
    if (item.status && item.status !== "completed") details.push(item.status);
    const li = h("li", { class: `history-item${item.status === "failed" ? " failed" : ""}` });
    const openBtn = h("button", { type: "button", class: "history-open", title: text,
      onclick: () => open(item) },
    h("span", { class: "history-prompt", text }),
    h("span", { class: "history-meta", text: details.filter(Boolean).join(" · ") }));
    li.append(openBtn);
    if (item.id !== undefined) {
      li.append(confirmButton({
        label: "✕", confirmLabel: "Delete", className: "icon-btn",
        ariaLabel: `Delete “${short}”`,
        onConfirm: async () => {
          try {
            await api(`/history/${encodeURIComponent(item.id)}`, { method: "DELETE" });
            li.remove();
            updateEmpty();
          } catch (error) {
            say(errorNote, error.message || "Could not delete that entry.");
          }
        },
      }));
    }
    return li;
  }

  async function load({ append = false } = {}) {
    const mine = ++ticket;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (query) params.set("q", query);
    if (append && cursor) params.set("cursor", cursor);
    let page;
    try {
      page = await optionalApi(`/history?${params}`);
    } catch (error) {
      if (mine === ticket) say(errorNote, error.message || "Could not load the history.");
      return;
    }
    if (mine !== ticket) return;
    if (page === null) { section.hidden = true; return; }
    section.hidden = false;
    say(errorNote, "");
    const items = Array.isArray(page) ? page
      : Array.isArray(page.data) ? page.data : Array.isArray(page.items) ? page.items : [];
    if (!append) list.replaceChildren();
    for (const item of items) if (item && typeof item === "object") list.append(row(item));
    cursor = page.next_cursor ?? page.nextCursor ?? null;
    more.hidden = !cursor;
    updateEmpty();
  }

  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      query = search.value.trim();
      load();
    }, 250);
  });
  more.addEventListener("click", () => load({ append: true }));

  return {
    load,
    /** Reload soon: the gateway persists requests in the background, a moment later. */
    refreshSoon(delay = 800) {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => { if (!section.hidden) load(); }, delay);
    },
    clear() {
      ticket += 1;
      clearTimeout(debounce);
      clearTimeout(refreshTimer);
      query = "";
      cursor = null;
      search.value = "";
      list.replaceChildren();
      section.hidden = true;
    },
  };
}
