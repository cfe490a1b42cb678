// Entry point: wires the screens together and decides what to show at start.

import { api, onUnauthorized, optionalApi, session } from "./api.js";
import { createAuth, takeResetToken } from "./auth.js";
import { createChatSettings } from "./chat-settings.js";
import { conversationOf, createChat } from "./chat.js";
import { conversationInAddress, createConversations } from "./conversations.js";
import { $, h, say } from "./dom.js";
import { createHistory } from "./history.js";
import { createJobs } from "./jobs.js";
import { createKeys } from "./keys.js";
import { createUsage } from "./usage.js";

const MODEL_KEY = "gateway.model";
const DEFAULT_MODEL = "gateway-demo";

const appView = $("app-view");
const modelSelect = $("model-select");
const sidebar = $("sidebar");
const backdrop = $("backdrop");
const sidebarToggle = $("sidebar-open");

function remember(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode */ }
}
function forget(key) {
  try { localStorage.removeItem(key); } catch { /* private mode */ }
}
function recall(key) {
  try { return localStorage.getItem(key); } catch { return null; }
}

/** Select a model in the picker if this user can call it. */
function pickModel(model) {
  if (model && [...modelSelect.options].some((o) => o.value === model && !o.disabled)) {
    modelSelect.value = model;
    showModel();
  }
}

const auth = createAuth({ onSignedIn: ({ apiKey }) => enter({ apiKey }) });
const conversations = createConversations({
  onOpen: (conversation) => {
    const messages = Array.isArray(conversation.messages) ? conversation.messages : [];
    chat.load(messages, { heading: conversation.title });
    pickModel(messages.findLast((m) => m.role === "assistant" && m.model)?.model);
    closeSidebar();
  },
  onRenamed: (conversation) => chat.setTitle(conversation.title),
  onDeleted: () => { conversations.startNew(); chat.reset(); },
});
const chat = createChat({
  getModel: () => modelSelect.value,
  prepare: (text) => conversations.ensure(text),
  onReply: () => { history.refreshSoon(); conversations.refreshSoon(); },
});
const history = createHistory({
  onOpen: (item) => {
    // An API call opened here continues as a new conversation when sent.
    conversations.startNew();
    chat.load(conversationOf(item));
    pickModel(item.model);
    closeSidebar();
  },
});
const chatSettings = createChatSettings({
  current: () => conversations.settings,
  save: (values) => conversations.saveSettings(values),
});
const keys = createKeys();
const jobs = createJobs({
  models: () => [...modelSelect.options].filter((o) => !o.disabled && o.value)
    .map((o) => o.value),
});
const usage = createUsage();

function showModel() {
  $("chat-model").textContent = modelSelect.value;
  $("empty-model").textContent = modelSelect.value || "the selected model";
}

/**
 * Fill the Model picker with what /v1/models offers this user; the models this gateway
 * serves outside the user's plan (from /rate-limit, when it says) are listed disabled,
 * saying why, rather than silently missing.
 */
async function loadModels() {
  let models = [];
  let locked = [];
  const [listed, limits] = await Promise.allSettled([api("/v1/models"),
    optionalApi("/rate-limit")]);
  if (listed.status === "fulfilled") {
    const body = listed.value;
    // A chat picker: models that only embed (capabilities without "chat") are left out.
    models = Array.isArray(body?.data) ? body.data.filter((m) => m && m.id
      && (!Array.isArray(m.capabilities) || m.capabilities.includes("chat"))) : [];
  } else if (listed.reason.status === 401) {
    return;
  } else {
    say($("chat-error"), `Could not load the models: ${listed.reason.message}`);
  }
  if (limits.status === "fulfilled" && Array.isArray(limits.value?.models?.not_in_plan)) {
    const chats = limits.value.models.chat;
    locked = limits.value.models.not_in_plan.filter((id) => typeof id === "string"
      && (!Array.isArray(chats) || chats.includes(id)));
  }
  const owners = new Set(models.map((m) => m.owned_by || ""));
  const option = (m) => h("option", { value: m.id, text: m.id });
  if (owners.size > 1) {
    // Group by provider when there are several, e.g. "demo", "openai".
    const ownedBy = (owner) => models.filter((m) => (m.owned_by || "") === owner);
    modelSelect.replaceChildren(...[...owners].map((owner) => h("optgroup",
      { label: owner || "other" }, ownedBy(owner).map(option))));
  } else {
    modelSelect.replaceChildren(...models.map(option));
  }
  if (!models.length) modelSelect.append(h("option", { value: "", text: "No models available" }));
  if (locked.length) {
    modelSelect.append(h("optgroup", { label: "Not in your plan" }, locked.map((id) =>
      h("option", { value: id, disabled: true, text: `${id} (not in your plan)` }))));
  }
  modelSelect.disabled = !models.length;
  const ids = models.map((m) => m.id);
  const saved = recall(MODEL_KEY);
  modelSelect.value = ids.includes(saved) ? saved
    : ids.includes(DEFAULT_MODEL) ? DEFAULT_MODEL : (ids[0] || "");
  showModel();
}

/** Enter the app with the stored token; apiKey is the show-once key from sign-up. */
async function enter({ apiKey = null } = {}) {
  let me;
  try {
    me = await api("/auth/me");
  } catch (error) {
    if (error.status !== 401) auth.show({ message: error.message });
    return; // 401: onUnauthorized already sent us to sign-in
  }
  $("account-email").textContent = me.email || "";
  $("account-avatar").textContent = (me.email || "?").slice(0, 1);
  $("account-plan").textContent = me.plan?.name || me.subscription_tier || "";
  for (const el of document.querySelectorAll(".base-url")) {
    el.textContent = `${location.origin}/v1`;
  }
  chat.reset();
  auth.hide();
  appView.hidden = false;
  await loadModels();
  history.load();
  await conversations.load();
  // A reload (or a shared link) reopens the conversation in the address.
  const open = conversationInAddress();
  if (open) await conversations.open(open);
  chat.focus();
  // The key made at sign-up is shown once, where keys live.
  if (apiKey) keys.open({ newKey: apiKey });
}

/** Leave the app: nothing of this user's stays in the page or in storage. */
function signOut({ message = "" } = {}) {
  chat.reset();
  chat.clearDraft();
  conversations.clear();
  chatSettings.close();
  history.clear();
  keys.close();
  usage.close();
  jobs.reset();
  closeSidebar();
  forget(MODEL_KEY);
  session.token = null;
  auth.show({ message });
}

onUnauthorized((error, token) => {
  // Only the current session: a late 401 for an older token must not end a new one.
  if (token === session.token) {
    signOut({ message: "Your session has expired. Please sign in again." });
  }
});

// Sidebar drawer (narrow screens)
function openSidebar() {
  sidebar.classList.add("open");
  backdrop.hidden = false;
  sidebarToggle.setAttribute("aria-expanded", "true");
  $("new-chat").focus();
}
function closeSidebar() {
  if (!sidebar.classList.contains("open")) return;
  sidebar.classList.remove("open");
  backdrop.hidden = true;
  sidebarToggle.setAttribute("aria-expanded", "false");
  sidebarToggle.focus();
}
sidebarToggle.addEventListener("click", openSidebar);
$("sidebar-close").addEventListener("click", closeSidebar);
backdrop.addEventListener("click", closeSidebar);
sidebar.addEventListener("keydown", (e) => { if (e.key === "Escape") closeSidebar(); });

$("new-chat").addEventListener("click", () => {
  conversations.startNew();
  chat.reset();
  closeSidebar();
  chat.focus();
});
$("open-chat-settings").addEventListener("click", () => chatSettings.open());
window.addEventListener("hashchange", () => {
  const reset = takeResetToken();
  if (reset) {
    auth.show({ reset });
    return;
  }
  // A conversation's link was followed (its entry in the sidebar, Back, a pasted link).
  const id = conversationInAddress();
  if (id && id !== conversations.current?.id && !appView.hidden) conversations.open(id);
});
modelSelect.addEventListener("change", () => {
  remember(MODEL_KEY, modelSelect.value);
  showModel();
});
$("open-keys").addEventListener("click", () => { closeSidebar(); keys.open(); });
$("open-usage").addEventListener("click", () => { closeSidebar(); usage.open(); });
$("open-jobs").addEventListener("click", () => { closeSidebar(); jobs.open(modelSelect.value); });
$("sign-out").addEventListener("click", () => signOut({ message: "You have signed out." }));

for (const dialog of document.querySelectorAll("dialog")) {
  for (const btn of dialog.querySelectorAll("[data-close]")) {
    btn.addEventListener("click", () => dialog.close());
  }
  // A click on the backdrop (outside the dialog's box) closes it.
  dialog.addEventListener("click", (e) => {
    if (e.target !== dialog) return;
    const r = dialog.getBoundingClientRect();
    if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) {
      dialog.close();
    }
  });
}

// A password reset link (#reset=<token>) opens the new password form, signed in or not.
const resetToken = takeResetToken();
if (resetToken) {
  $("boot").hidden = true;
  auth.show({ reset: resetToken });
} else if (session.token) {
  enter().finally(() => { $("boot").hidden = true; });
} else {
  $("boot").hidden = true;
  auth.show();
}
