// The sign-in / create-account screen.

import { ApiError, api, session } from "./api.js";
import { $, fieldError, say } from "./dom.js";

const MODES = {
  signin: { title: "Welcome back", submit: "Sign in", busy: "Signing in…",
    path: "/auth/login", autocomplete: "current-password", tab: "tab-signin" },
  signup: { title: "Create your account", submit: "Create account", busy: "Creating account…",
    path: "/auth/register", autocomplete: "new-password", tab: "tab-signup" },
};

/** Wire the auth screen; onSignedIn({user, apiKey}) runs after a successful sign-in/up. */
export function createAuth({ onSignedIn }) {
  const view = $("auth-view");
  const form = $("auth-form");
  const email = $("auth-email");
  const password = $("auth-password");
  const emailError = $("auth-email-error");
  const passwordError = $("auth-password-error");
  const formError = $("auth-error");
  const notice = $("auth-notice");
  const submit = $("auth-submit");
  const tabs = [$("tab-signin"), $("tab-signup")];
  let mode = "signin";

  function clearErrors() {
    fieldError(email, emailError, "");
    fieldError(password, passwordError, "");
    say(formError, "");
  }

  function setMode(next, { focus = false } = {}) {
    mode = next;
    const m = MODES[mode];
    for (const tab of tabs) {
      const selected = tab.id === m.tab;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      if (selected && focus) tab.focus();
    }
    form.setAttribute("aria-labelledby", m.tab);
    $("auth-title").textContent = m.title;
    submit.textContent = m.submit;
    password.autocomplete = m.autocomplete;
    $("auth-password-hint").hidden = mode !== "signup";
    clearErrors();
  }

  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => setMode(i === 0 ? "signin" : "signup"));
    tab.addEventListener("keydown", (e) => {
      if (e.key === "ArrowLeft" || e.key === "ArrowRight" || e.key === "Home"
        || e.key === "End") {
        e.preventDefault();
        setMode(mode === "signin" ? "signup" : "signin", { focus: true });
      }
    });
  });

  function showError(error) {
    const target = { email: [email, emailError], password: [password, passwordError] }[
      error instanceof ApiError ? error.param : null];
    if (target) {
      fieldError(target[0], target[1], error.message);
      target[0].focus();
      return;
    }
    say(formError, error instanceof ApiError ? error.message
      : "Something went wrong. Please try again.");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    say(notice, "");
    const creds = { email: email.value.trim(), password: password.value };
    if (!creds.email) fieldError(email, emailError, "Enter your email address.");
    if (!creds.password) fieldError(password, passwordError, "Enter your password.");
    if (!creds.email || !creds.password) {
      (creds.email ? password : email).focus();
      return;
    }
    const m = MODES[mode];
    submit.disabled = true;
    submit.textContent = m.busy;
    try {
      const body = await api(m.path, { method: "POST", body: creds, auth: false });
      session.token = body.token;
      password.value = "";
      await onSignedIn({ user: body.user, apiKey: body.apiKey || null });
    } catch (error) {
      showError(error);
    } finally {
      submit.disabled = false;
      submit.textContent = MODES[mode].submit;
    }
  });

  return {
    /** Show the screen, optionally with a notice ("Your session expired…"). */
    show({ message = "", signup = false } = {}) {
      $("app-view").hidden = true;
      view.hidden = false;
      setMode(signup ? "signup" : "signin");
      say(notice, message);
      (email.value ? password : email).focus();
    },
    hide() { view.hidden = true; },
  };
}
