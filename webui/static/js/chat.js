// The conversation pane: message list, composer, streaming replies, Stop, and the message
// actions (copy any message, regenerate the last answer, edit and resend the last prompt).
// A user's message is inserted as text; a model's answer is rendered as sanitised
// Markdown (markdown.js), never inserted as HTML as it came.
//
// The thread is sent whole each time (the API is stateless): the conversation's system
// prompt first, then the visible turns. Regenerate resends the thread without its last
// answer; edit resends it with the last prompt changed.

import { ApiError, streamChat } from "./api.js";
import { $, copyText, h, ms, num, say } from "./dom.js";
import { handleCodeCopy, markdownView } from "./markdown.js";

const ROLE_LABELS = { user: "You", assistant: "Assistant", system: "System", tool: "Tool" };

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((p) => (p && typeof p.text === "string" ? p.text : "")).join(" ");
  }
  return content === null || content === undefined ? "" : String(content);
}

/** Messages to restore from a history item: its full message list when present. */
export function conversationOf(item) {
  const messages = Array.isArray(item.messages) && item.messages.length
    ? item.messages.filter((m) => m && typeof m.role === "string")
      .map((m) => ({ role: m.role, content: textOf(m.content) }))
    : [{ role: "user", content: textOf(item.prompt) }];
  if (item.response) messages.push({ role: "assistant", content: textOf(item.response) });
  return messages.filter((m) => m.content);
}

/**
 * Wire the chat pane. getModel() names the selected model; prepare(text) resolves to the
 * conversation a turn belongs to ({id, system_prompt, temperature, max_tokens}, created on
 * the first send; null to send without one); onReply() runs after each reply.
 */
export function createChat({ getModel, prepare = async () => null, onReply = () => {} }) {
  const scroller = $("chat-scroll");
  const list = $("messages");
  const form = $("composer");
  const prompt = $("prompt");
  const sendBtn = $("send");
  const stopBtn = $("stop");
  const chatError = $("chat-error");
  const status = $("chat-status");
  const empty = $("empty-state");
  const title = $("chat-title");

  let turns = []; // {role, content, article}
  let controller = null;
  let generation = 0; // bumps on reset, so a late-settling stream can't touch a new chat

  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };
  const thread = () => turns.map(({ role, content }) => ({ role, content }));

  function setTitle(text) {
    const line = (text || "").trim().split("\n")[0];
    title.textContent = line ? (line.length > 60 ? `${line.slice(0, 60)}…` : line) : "New chat";
  }

  function addMessage(role, text) {
    const markdown = role === "assistant";
    const body = h("div", { class: markdown ? "msg-body markdown" : "msg-body" });
    const article = h("article", { class: `msg ${role}` },
      h("p", { class: "msg-role", text: ROLE_LABELS[role] || role }), body);
    list.append(article);
    empty.hidden = true;
    let view = null;
    if (markdown) {
      view = markdownView(body);
      view.set(text);
      view.flush();
    } else {
      body.append(document.createTextNode(text));
    }
    return { article, body, markdown: view };
  }

  function setBusy(busy) {
    sendBtn.hidden = busy;
    stopBtn.hidden = !busy;
    form.setAttribute("aria-busy", String(busy));
    list.classList.toggle("busy", busy);
  }

  function note(view, text, kind = "") {
    view.article.append(h("p", { class: `msg-note ${kind}`.trim(), text }));
  }

  function meta(view, model, result) {
    const parts = [model];
    const u = result.usage;
    if (u && u.total_tokens !== undefined) {
      parts.push(`${num(u.total_tokens)} tokens (${num(u.prompt_tokens)} prompt + `
        + `${num(u.completion_tokens)} completion)`);
    }
    if (result.ttftMs !== null) parts.push(`first token ${ms(result.ttftMs)}`);
    if (result.totalMs !== null) parts.push(`total ${ms(result.totalMs)}`);
    view.article.append(h("p", { class: "msg-meta", text: parts.join(" · ") }));
  }

  function settle(view) {
    view.markdown?.flush();
    view.article.classList.remove("streaming", "waiting");
    view.article.removeAttribute("aria-busy");
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return "Something went wrong. Please try again.";
    // The gateway's own 429 message already says when to retry; add it only if not.
    if (error.status === 429 && error.retryAfter && !/try again/i.test(error.message)) {
      return `${error.message} Try again in ${Math.ceil(error.retryAfter)} s.`;
    }
    return error.message;
  }

  /** The action buttons: Copy on every message, Regenerate on the last answer, Edit on
   * the last prompt. None while a reply streams. */
  function refreshActions() {
    for (const bar of list.querySelectorAll(".msg-actions")) bar.remove();
    if (controller) return;
    const lastUser = turns.findLastIndex((t) => t.role === "user");
    turns.forEach((turn, i) => {
      const who = turn.role === "user" ? "prompt" : "answer";
      const bar = h("div", { class: "msg-actions" });
      const copy = h("button", { type: "button", class: "btn ghost small", text: "Copy",
        "aria-label": `Copy ${who}` });
      copy.addEventListener("click", async () => {
        const ok = await copyText(turn.content);
        copy.textContent = ok ? "Copied" : "Copy failed";
        setTimeout(() => { copy.textContent = "Copy"; }, 1500);
      });
      bar.append(copy);
      if (i === turns.length - 1 && turn.role === "assistant" && lastUser === i - 1) {
        bar.append(h("button", { type: "button", class: "btn ghost small", text: "Regenerate",
          onclick: regenerate }));
      }
      if (i === lastUser) {
        bar.append(h("button", { type: "button", class: "btn ghost small", text: "Edit",
          onclick: () => edit(i) }));
      }
      turn.article.append(bar);
    });
  }

  /** Stream an answer to `history` (ending with a user turn) into a new assistant view.
   * undo() puts the page back when the call fails before anything arrives. */
  async function run(history, { undo }) {
    const model = getModel();
    const turn = generation;
    const view = addMessage("assistant", "");
    view.article.classList.add("streaming", "waiting");
    view.article.setAttribute("aria-busy", "true");
    toBottom();
    controller = new AbortController();
    setBusy(true);
    refreshActions();
    say(status, "Generating a reply…");
    let partial = "";
    const keep = (content) => {
      turns = [...history.map((t) => ({ ...t })), ...(content !== null
        ? [{ role: "assistant", content, article: view.article }] : [])];
    };
    try {
      const conversation = await prepare(history.find((t) => t.role === "user")?.content || "");
      if (turn !== generation) return;
      const messages = history.map(({ role, content }) => ({ role, content }));
      if (conversation?.system_prompt) {
        messages.unshift({ role: "system", content: conversation.system_prompt });
      }
      const params = {};
      if (conversation?.temperature !== null && conversation?.temperature !== undefined) {
        params.temperature = conversation.temperature;
      }
      if (conversation?.max_tokens) params.max_tokens = conversation.max_tokens;
      const result = await streamChat({
        model, messages, params, signal: controller.signal,
        headers: conversation ? { "x-gateway-conversation": conversation.id } : {},
        onDelta: (piece) => {
          if (turn !== generation) return;
          const stick = nearBottom();
          if (!partial) view.article.classList.remove("waiting");
          partial += piece;
          view.markdown.set(partial);
          if (stick) requestAnimationFrame(toBottom);
        },
      });
      if (turn !== generation) return;
      settle(view);
      keep(result.text);
      if (!result.complete) note(view, "The connection closed before the reply finished.", "error");
      else if (result.finishReason === "length") note(view, "Stopped at the token limit.");
      else if (!result.text) note(view, "The model returned an empty reply.");
      meta(view, model, result);
      say(status, "Reply complete.");
      onReply();
    } catch (error) {
      if (turn !== generation) return;
      settle(view);
      if (error.name === "AbortError") {
        // Keep what arrived: the next turn continues from the visible conversation.
        keep(partial || null);
        note(view, partial ? "Stopped." : "Stopped before the reply started.");
        say(status, "Stopped.");
        onReply();
      } else if (partial || error.partial !== undefined) {
        keep(partial || null);
        note(view, `Error: ${describe(error)}`, "error");
        say(status, "The reply failed.");
        onReply();
      } else {
        // Failed before anything streamed: undo the turn.
        view.article.remove();
        undo();
        say(chatError, describe(error));
        say(status, "");
      }
    } finally {
      if (turn === generation) {
        controller = null;
        setBusy(false);
        refreshActions();
        if (document.activeElement === document.body || !document.activeElement) prompt.focus();
      }
    }
  }

  async function send(text) {
    if (controller || !text.trim()) return;
    if (!getModel()) { say(chatError, "Choose a model first."); return; }
    say(chatError, "");
    const before = turns;
    if (!turns.length) setTitle(text);
    const userView = addMessage("user", text);
    const history = [...turns, { role: "user", content: text, article: userView.article }];
    turns = history;
    prompt.value = "";
    autosize();
    await run(history, { undo: () => {
      // Give the text back, as it was before Send.
      userView.article.remove();
      turns = before;
      if (!turns.length) { setTitle(""); empty.hidden = false; }
      if (!prompt.value) { prompt.value = text; autosize(); }
    } });
  }

  /** Answer the last prompt again: the thread without its last answer. */
  async function regenerate() {
    const last = turns.at(-1);
    if (controller || !last || last.role !== "assistant") return;
    say(chatError, "");
    const before = turns;
    last.article.remove();
    const history = turns.slice(0, -1);
    turns = history;
    await run(history, { undo: () => {
      list.append(last.article);
      turns = before;
    } });
  }

  /** Edit the last prompt in place; saving resends the thread with it changed. */
  function edit(index) {
    const original = turns[index];
    if (controller || !original) return;
    // Names that don't contain "Message" or "Send": those belong to the composer.
    const box = h("textarea", { class: "edit-box", rows: 3, "aria-label": "Edit prompt" });
    box.value = original.content;
    const save = h("button", { type: "button", class: "btn primary small", text: "Save" });
    const cancel = h("button", { type: "button", class: "btn small", text: "Cancel" });
    const editor = h("div", { class: "msg-edit" }, box, h("div", { class: "msg-edit-actions" },
      cancel, save));
    const body = original.article.querySelector(".msg-body");
    original.article.querySelector(".msg-actions")?.remove();
    body.hidden = true;
    original.article.append(editor);
    box.focus();
    const close = () => { editor.remove(); body.hidden = false; refreshActions(); };
    cancel.addEventListener("click", close);
    box.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { e.preventDefault(); close(); }
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); save.click(); }
    });
    save.addEventListener("click", async () => {
      const text = box.value;
      if (!text.trim()) { box.focus(); return; }
      const before = turns;
      const removed = turns.slice(index).map((t) => t.article);
      for (const article of removed) article.remove();
      const kept = turns.slice(0, index);
      if (!kept.length) setTitle(text);
      const userView = addMessage("user", text);
      const history = [...kept, { role: "user", content: text, article: userView.article }];
      turns = history;
      await run(history, { undo: () => {
        userView.article.remove();
        for (const article of removed) list.append(article);
        editor.remove();
        body.hidden = false;
        turns = before;
        if (!kept.length) setTitle(before[0]?.content);
      } });
    });
  }

  function stop() {
    if (controller) controller.abort();
  }

  function autosize() {
    prompt.style.height = "auto";
    prompt.style.height = `${Math.min(prompt.scrollHeight, window.innerHeight * 0.4)}px`;
  }

  function reset() {
    stop();
    generation += 1;
    controller = null;
    setBusy(false);
    turns = [];
    list.replaceChildren();
    empty.hidden = false;
    setTitle("");
    say(chatError, "");
    say(status, "");
  }

  handleCodeCopy(list);

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    send(prompt.value);
    prompt.focus();
  });
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey
      && !e.metaKey) {
      e.preventDefault();
      if (!controller) form.requestSubmit();
    } else if (e.key === "Escape" && controller) {
      stop();
    }
  });
  prompt.addEventListener("input", autosize);
  stopBtn.addEventListener("click", () => { stop(); prompt.focus(); });

  return {
    reset,
    stop,
    /** Forget the unsent text (at sign-out: it belongs to the user who typed it). */
    clearDraft() {
      prompt.value = "";
      autosize();
    },
    focus: () => prompt.focus(),
    get busy() { return controller !== null; },
    /** Replace the pane with earlier messages (a conversation, a history item). */
    load(restored, { heading } = {}) {
      reset();
      for (const m of restored) {
        if (m.role !== "user" && m.role !== "assistant") continue;
        const view = addMessage(m.role, m.content);
        if (m.status === "failed") note(view, "This answer failed.", "error");
        else if (m.status === "cancelled") note(view, "Stopped.");
        turns.push({ role: m.role, content: m.content, article: view.article });
      }
      setTitle(heading || (turns.find((t) => t.role === "user") || {}).content);
      refreshActions();
      toBottom();
      prompt.focus();
    },
    setTitle,
    get messages() { return thread(); },
  };
}
