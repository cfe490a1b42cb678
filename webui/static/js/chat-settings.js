// The "Chat settings" dialog: the conversation's system prompt, temperature and max tokens.
// Empty means "the model's default" (null on the server). The gateway's 400s show at
// their field.

import { ApiError } from "./api.js";
import { $, fieldError, say } from "./dom.js";

/** Wire the dialog: current() gives the settings shown; save(values) stores them. */
export function createChatSettings({ current, save }) {
  const dialog = $("chat-settings-dialog");
  const form = $("chat-settings-form");
  const formError = $("chat-settings-error");
  const fields = {
    system_prompt: [$("setting-system"), $("setting-system-error")],
    temperature: [$("setting-temperature"), $("setting-temperature-error")],
    max_tokens: [$("setting-max-tokens"), $("setting-max-tokens-error")],
  };

  function clearErrors() {
    for (const [input, error] of Object.values(fields)) fieldError(input, error, "");
    say(formError, "");
  }

  /** The form's values, or null after marking what is wrong. */
  function read() {
    const system = fields.system_prompt[0].value;
    const temperatureText = fields.temperature[0].value.trim();
    const maxText = fields.max_tokens[0].value.trim();
    const temperature = temperatureText === "" ? null : Number(temperatureText);
    const maxTokens = maxText === "" ? null : Number(maxText);
    let ok = true;
    if (temperature !== null && !(temperature >= 0 && temperature <= 2)) {
      fieldError(...fields.temperature, "A number from 0 to 2, or empty for the default.");
      ok = false;
    }
    if (maxTokens !== null && !(Number.isInteger(maxTokens) && maxTokens >= 1)) {
      fieldError(...fields.max_tokens, "A whole number of at least 1, or empty.");
      ok = false;
    }
    return ok ? { system_prompt: system.trim() ? system : null, temperature,
      max_tokens: maxTokens } : null;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const values = read();
    if (!values) return;
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      await save(values);
      dialog.close();
    } catch (error) {
      const target = error instanceof ApiError ? fields[error.param] : null;
      if (target) {
        fieldError(...target, error.message);
        target[0].focus();
      } else {
        say(formError, error.message || "Could not save the settings.");
      }
    } finally {
      submit.disabled = false;
    }
  });

  return {
    open() {
      clearErrors();
      const s = current() || {};
      fields.system_prompt[0].value = s.system_prompt || "";
      fields.temperature[0].value = s.temperature ?? "";
      fields.max_tokens[0].value = s.max_tokens ?? "";
      if (!dialog.open) dialog.showModal();
      fields.system_prompt[0].focus();
    },
    close() { if (dialog.open) dialog.close(); },
  };
}
