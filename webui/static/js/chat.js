// The conversation: message list, composer, streaming replies, Stop.
// A user's message is inserted as text; a model's answer is rendered as sanitised
// Markdown (markdown.js), never inserted as HTML as it came.

import { ApiError, streamChat } from "./api.js";
import { $, h, ms, num, say } from "./dom.js";
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

/** Wire the chat pane. getModel() names the selected model; onReply() runs after each reply. */
export function createChat({ getModel, onReply = () => {} }) {
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

  let messages = [];
  let controller = null;
  let generation = 0; // bumps on reset, so a late-settling stream can't touch a new chat

  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };

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

  async function send(text) {
    if (controller || !text.trim()) return;
    const model = getModel();
    if (!model) { say(chatError, "Choose a model first."); return; }
    say(chatError, "");
    const turn = generation;
    const history = [...messages, { role: "user", content: text }];
    if (!messages.length) setTitle(text);
    const userView = addMessage("user", text);
    prompt.value = "";
    autosize();
    const view = addMessage("assistant", "");
    view.article.classList.add("streaming", "waiting");
    view.article.setAttribute("aria-busy", "true");
    toBottom();
    setBusy(true);
    say(status, "Generating a reply…");
    controller = new AbortController();
    let partial = "";
    try {
      const result = await streamChat({
        model, messages: history, signal: controller.signal,
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
      messages = [...history, { role: "assistant", content: result.text }];
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
        messages = partial ? [...history, { role: "assistant", content: partial }] : history;
        note(view, partial ? "Stopped." : "Stopped before the reply started.");
        say(status, "Stopped.");
        onReply();
      } else if (partial || error.partial !== undefined) {
        messages = partial ? [...history, { role: "assistant", content: partial }] : history;
        note(view, `Error: ${describe(error)}`, "error");
        say(status, "The reply failed.");
        onReply();
      } else {
        // Failed before anything streamed: undo the turn and give the text back.
        view.article.remove();
        userView.article.remove();
        if (!messages.length) { setTitle(""); empty.hidden = false; }
        if (!prompt.value) { prompt.value = text; autosize(); }
        say(chatError, describe(error));
        say(status, "");
      }
    } finally {
      if (turn === generation) {
        controller = null;
        setBusy(false);
        if (document.activeElement === document.body || !document.activeElement) prompt.focus();
      }
    }
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
    messages = [];
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
    /** Replace the conversation with earlier messages (from history). */
    load(restored) {
      reset();
      messages = restored.map((m) => ({ role: m.role, content: m.content }));
      for (const m of messages) addMessage(m.role, m.content);
      setTitle((messages.find((m) => m.role === "user") || {}).content);
      toBottom();
      prompt.focus();
    },
  };
}
