// The sidebar's conversations (server-side threads): list newest first, search, open,
// rename, delete; the current conversation and its settings (system prompt, temperature,
// max tokens). A new chat becomes a conversation on its first send. The open
// conversation's id is in the address (#conversation=<id>), so a reload reopens it.
// On a gateway without /conversations the list stays hidden and chats are sent as
// plain calls.

import { api, optionalApi } from "./api.js";
import { $, ago, confirmButton, h, say } from "./dom.js";

const PAGE = 30;
const HASH = /^#conversation=([0-9a-f-]{36})$/i;
const TITLE_CHARS = 80;

/** The id in the address, or null. */
export function conversationInAddress() {
  const match = HASH.exec(location.hash);
  return match ? match[1].toLowerCase() : null;
}

function setAddress(id) {
  const url = id ? `#conversation=${id}` : `${location.pathname}${location.search}`;
  // replaceState: no hashchange event, and Back does not step through every chat.
  if (id ? location.hash !== url : location.hash) history.replaceState(null, "", url);
}

/** The default title: the first line of the first prompt, cut on a word. */
export function titleFrom(text) {
  const line = (text || "").trim().split("\n")[0].trim();
  if (line.length <= TITLE_CHARS) return line || "New chat";
  const cut = line.slice(0, TITLE_CHARS);
  const space = cut.lastIndexOf(" ");
  return `${(space > TITLE_CHARS / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

const displayTitle = (c) => c.title || "Untitled chat";

/**
 * Wire the list. onOpen(conversation with its messages) shows it in the chat;
 * onRenamed(conversation) and onDeleted() tell when the open one changed or went.
 */
export function createConversations({ onOpen, onRenamed = () => {}, onDeleted = () => {} }) {
  const nav = $("conversations");
  const list = $("conversation-list");
  const search = $("conversation-search");
  const emptyNote = $("conversations-empty");
  const errorNote = $("conversations-error");
  const more = $("conversations-more");
  let available = null; // null: not asked yet; false: this gateway has no /conversations
  let current = null; // the open conversation (summary fields), null for a new chat
  let draft = {}; // settings chosen for a new chat before its first send
  let last = null;
  let loading = 0;
  let soon = 0;

  function fail(error) {
    if (error.status !== 401) say(errorNote, error.message || "Could not load conversations.");
  }

  function markCurrent() {
    for (const link of list.querySelectorAll("a.conversation-open")) {
      if (link.dataset.id === current?.id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function renameForm(conversation, link) {
    const input = h("input", { class: "rename-input", value: conversation.title || "",
      "aria-label": "New title", maxlength: 200 });
    const finish = () => { input.replaceWith(link); link.focus(); };
    input.addEventListener("keydown", async (e) => {
      if (e.key === "Escape") { e.preventDefault(); finish(); return; }
      if (e.key !== "Enter") return;
      e.preventDefault();
      const title = input.value.trim();
      if (!title) return;
      try {
        const body = await api(`/conversations/${conversation.id}`,
          { method: "PATCH", body: { title } });
        if (current?.id === body.id) {
          current = summary(body);
          onRenamed(body);
        }
        await load();
      } catch (error) { fail(error); finish(); }
    });
    input.addEventListener("blur", () => { if (input.isConnected) finish(); });
    link.replaceWith(input);
    input.focus();
    input.select();
  }

  function row(conversation) {
    const name = displayTitle(conversation);
    const link = h("a", { class: "conversation-open", href: `#conversation=${conversation.id}`,
      dataset: { id: conversation.id }, title: name },
    h("span", { class: "conversation-title", text: name }),
    h("span", { class: "conversation-meta", "aria-hidden": "true",
      text: ago(conversation.updated_at) }));
    const item = h("li", { class: "conversation-item" }, link);
    item.append(
      h("button", { type: "button", class: "icon-btn", text: "✎",
        "aria-label": `Rename “${name}”`, onclick: () => renameForm(conversation, link) }),
      confirmButton({
        label: "✕", confirmLabel: "Delete", className: "icon-btn",
        ariaLabel: `Delete “${name}”`,
        onConfirm: async () => {
          try {
            await api(`/conversations/${conversation.id}`, { method: "DELETE" });
            if (current?.id === conversation.id) onDeleted();
            await load();
          } catch (error) { fail(error); }
        },
      }));
    return item;
  }

  function refreshLater() {
    clearTimeout(soon);
    soon = setTimeout(() => (busy() ? refreshLater() : load({ background: true })), 400);
  }

  /** A background refresh must not replace the rows while the user is mid-action in the
   * list (a delete armed, a title being edited): it would drop that under their hand. */
  const busy = () => list.querySelector(".confirming, .rename-input") !== null;

  async function load({ append = false, background = false } = {}) {
    const turn = ++loading;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (search.value.trim()) params.set("q", search.value.trim());
    if (append && last) params.set("after", last);
    let body;
    try {
      body = await optionalApi(`/conversations?${params}`);
    } catch (error) {
      if (turn === loading) fail(error);
      return;
    }
    if (turn !== loading) return;
    if (background && busy()) { refreshLater(); return; }
    available = body !== null;
    nav.hidden = !available;
    if (!available) return;
    say(errorNote, "");
    const items = Array.isArray(body.data) ? body.data : [];
    if (append) list.append(...items.map(row));
    else list.replaceChildren(...items.map(row));
    last = body.last_id || null;
    more.hidden = !body.has_more;
    emptyNote.hidden = list.children.length > 0;
    emptyNote.textContent = search.value.trim() ? "No conversation matches."
      : "No conversations yet.";
    markCurrent();
  }

  function summary(c) {
    const { id, title, system_prompt: systemPrompt, temperature, max_tokens: maxTokens } = c;
    return { id, title, system_prompt: systemPrompt, temperature, max_tokens: maxTokens };
  }

  let searchTimer = 0;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => load(), 250);
  });
  more.addEventListener("click", () => load({ append: true }));

  return {
    load,
    get current() { return current; },
    /** Settings of the open conversation, or those chosen for the new one. */
    get settings() { return current || draft; },
    async open(id) {
      try {
        const body = await api(`/conversations/${encodeURIComponent(id)}`);
        current = summary(body);
        setAddress(current.id);
        markCurrent();
        onOpen(body);
      } catch (error) {
        if (error.status === 404) {
          setAddress(null);
          say(errorNote, "That conversation no longer exists.");
          load();
        } else {
          fail(error);
        }
      }
    },
    /** Start a new chat: nothing is created until it is sent. */
    startNew() {
      current = null;
      draft = {};
      setAddress(null);
      markCurrent();
    },
    /** The conversation a turn belongs to, created (titled after its prompt) on the first
     * send of a new chat; null on a gateway without conversations. */
    async ensure(text) {
      if (current) return current;
      if (available === null) await load();
      if (!available) return null;
      const body = await api("/conversations", { method: "POST",
        body: { title: titleFrom(text), ...draft } });
      current = summary(body);
      draft = {};
      setAddress(current.id);
      load();
      return current;
    },
    /** Save settings: on the open conversation, or for the new chat's first send. */
    async saveSettings(values) {
      if (!current) {
        draft = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== null));
        return;
      }
      const body = await api(`/conversations/${current.id}`, { method: "PATCH", body: values });
      current = summary(body);
    },
    /** Re-read the list shortly after a reply: the server orders it by the latest call. */
    refreshSoon: refreshLater,
    /** Sign-out: nothing of this user's stays. */
    clear() {
      clearTimeout(soon);
      clearTimeout(searchTimer);
      loading += 1;
      current = null;
      draft = {};
      available = null;
      last = null;
      search.value = "";
      list.replaceChildren();
      emptyNote.hidden = true;
      more.hidden = true;
      say(errorNote, "");
      setAddress(null);
    },
  };
}
