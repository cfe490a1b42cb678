// The "API keys" dialog: list (masked), create, show a new key once, regenerate, revoke.

import { api } from "./api.js";
import { $, ago, confirmButton, fieldError, h, keyReveal, say, shortDate } from "./dom.js";

export function createKeys() {
  const dialog = $("keys-dialog");
  const list = $("keys-list");
  const form = $("key-create");
  const nameInput = $("key-name");
  const errorNote = $("key-error");
  const reveal = $("key-reveal");

  function showKey(key, title) {
    reveal.replaceChildren(keyReveal(key, {
      title,
      onDone: () => { reveal.replaceChildren(); nameInput.focus(); },
    }));
    reveal.querySelector("button")?.focus();
  }

  function fail(error) {
    if (error.status !== 401) say(errorNote, error.message || "That didn't work.");
  }

  function row(key) {
    const active = key.status === "active";
    const dates = active
      ? `Created ${shortDate(key.created_at)} · `
        + (key.last_used_at ? `last used ${ago(key.last_used_at)}` : "never used")
      : `Revoked ${shortDate(key.revoked_at)}`;
    const li = h("li", { class: `key-row${active ? "" : " revoked"}`, dataset: { keyId: key.id } },
      h("div", { class: "key-main" },
        h("span", { class: "key-name" }, key.name || "Unnamed",
          h("span", { class: `badge${active ? "" : " revoked"}`, text: key.status })),
        h("code", { class: "key-masked", text: key.masked || "" }),
        h("span", { class: "key-dates", text: dates })));
    if (active) {
      const label = key.name || "key";
      li.append(h("div", { class: "key-actions" },
        confirmButton({
          label: "Regenerate", confirmLabel: "Confirm regenerate",
          ariaLabel: `Regenerate ${label}`,
          onConfirm: async () => {
            try {
              const body = await api(`/auth/keys/${encodeURIComponent(key.id)}/regenerate`,
                { method: "POST" });
              await refresh();
              showKey(body.key, `New key for “${body.name || label}”: copy it now. `
                + "The old key no longer works.");
            } catch (error) { fail(error); }
          },
        }),
        confirmButton({
          label: "Revoke", confirmLabel: "Confirm revoke", className: "btn small danger",
          ariaLabel: `Revoke ${label}`,
          onConfirm: async () => {
            try {
              await api(`/auth/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
              await refresh();
              nameInput.focus(); // the row that had focus was re-rendered
            } catch (error) { fail(error); }
          },
        })));
    }
    return li;
  }

  async function refresh() {
    try {
      const body = await api("/auth/keys");
      const keys = Array.isArray(body?.data) ? body.data : [];
      // Active keys first, newest first within each group.
      keys.sort((a, b) => (a.status === "active" ? 0 : 1) - (b.status === "active" ? 0 : 1)
        || String(b.created_at).localeCompare(String(a.created_at)));
      list.replaceChildren(...keys.map(row));
      if (!keys.length) list.append(h("li", { class: "muted small", text: "No keys yet." }));
    } catch (error) { fail(error); }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    say(errorNote, "");
    const name = nameInput.value.trim();
    if (!name) {
      fieldError(nameInput, errorNote, "Give the key a name, so you can tell it apart later.");
      nameInput.focus();
      return;
    }
    fieldError(nameInput, errorNote, "");
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const body = await api("/auth/keys", { method: "POST", body: { name } });
      nameInput.value = "";
      await refresh();
      showKey(body.key, `Your new key “${body.name || name}”: copy it now.`);
    } catch (error) {
      if (error.param === "name") fieldError(nameInput, errorNote, error.message);
      else fail(error);
    } finally {
      submit.disabled = false;
    }
  });

  // A shown key must not linger in the page once the dialog is closed.
  dialog.addEventListener("close", () => reveal.replaceChildren());

  return {
    /** Open the dialog; newKey (the key made at sign-up) is shown once, above the list. */
    open({ newKey = null } = {}) {
      say(errorNote, "");
      reveal.replaceChildren();
      list.replaceChildren();
      if (!dialog.open) dialog.showModal();
      if (newKey) {
        showKey(newKey, "Your API key: use it from any OpenAI client. Copy it now: "
          + "it is shown only once.");
      } else {
        nameInput.focus();
      }
      return refresh();
    },
    close() { if (dialog.open) dialog.close(); },
  };
}
