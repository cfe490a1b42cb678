// The sign-in screen: sign in, create an account, ask for a password reset link, and set a
// new password from that link (#reset=<token>, which the gateway mails).

import { ApiError, api, session } from "./api.js";
import { $, fieldError, say } from "./dom.js";

const MODES = {
  signin: { title: "Welcome back", submit: "Sign in", busy: "Signing in…",
    path: "/auth/login", autocomplete: "current-password", tab: "tab-signin" },
  signup: { title: "Create your account", submit: "Create account", busy: "Creating account…",
    path: "/auth/register", autocomplete: "new-password", tab: "tab-signup" },
  forgot: { title: "Reset your password", submit: "Send reset link", busy: "Sending…" },
  reset: { title: "Choose a new password", submit: "Set password", busy: "Saving…" },
};
const RESET_HASH = /^#reset=([A-Za-z0-9_-]+)$/;

/** The reset token in the address, taken out of it (it must not linger in history). */
export function takeResetToken() {
  const match = RESET_HASH.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  return match[1];
}

/** Wire the auth screen; onSignedIn({user, apiKey}) runs after a successful sign-in/up. */
export function createAuth({ onSignedIn }) {
  const view = $("auth-view");
  const form = $("auth-form");
  const email = $("auth-email");
  const password = $("auth-password");
  const emailError = $("auth-email-error");
  const passwordError = $("auth-password-error");
  const newPassword = $("reset-password");
  const newPasswordError = $("reset-password-error");
  const confirm = $("reset-confirm");
  const confirmError = $("reset-confirm-error");
  const formError = $("auth-error");
  const notice = $("auth-notice");
  const submit = $("auth-submit");
  const tabs = [$("tab-signin"), $("tab-signup")];
  let mode = "signin";
  let resetToken = null;

  function clearErrors() {
    fieldError(email, emailError, "");
    fieldError(password, passwordError, "");
    fieldError(newPassword, newPasswordError, "");
    fieldError(confirm, confirmError, "");
    say(formError, "");
  }

  function setMode(next, { focus = false } = {}) {
    mode = next;
    const m = MODES[mode];
    const tabbed = mode === "signin" || mode === "signup";
    tabs[0].parentElement.hidden = !tabbed;
    for (const tab of tabs) {
      const selected = tab.id === m.tab;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      if (selected && focus) tab.focus();
    }
    if (tabbed) {
      form.setAttribute("role", "tabpanel");
      form.setAttribute("aria-labelledby", m.tab);
    } else {
      // Unnamed: the page's heading says what it is, and a form named "Choose a new
      // password" would be one more match for the "New password" field's label.
      form.removeAttribute("role");
      form.removeAttribute("aria-labelledby");
    }
    $("auth-title").textContent = m.title;
    submit.textContent = m.submit;
    password.autocomplete = m.autocomplete || "current-password";
    $("auth-password-hint").hidden = mode !== "signup";
    $("auth-email-field").hidden = mode === "reset";
    $("auth-password-field").hidden = !tabbed;
    $("reset-fields").hidden = mode !== "reset";
    $("forgot-link").hidden = mode !== "signin";
    $("back-link").hidden = tabbed;
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

  $("forgot-link").addEventListener("click", (e) => {
    e.preventDefault();
    say(notice, "");
    setMode("forgot");
    email.focus();
  });
  $("back-link").addEventListener("click", (e) => {
    e.preventDefault();
    resetToken = null;
    say(notice, "");
    setMode("signin");
    (email.value ? password : email).focus();
  });

  function showError(error) {
    const fields = mode === "reset"
      ? { password: [newPassword, newPasswordError] }
      : { email: [email, emailError], password: [password, passwordError] };
    const target = fields[error instanceof ApiError ? error.param : null];
    if (target) {
      fieldError(target[0], target[1], error.message);
      target[0].focus();
      return;
    }
    say(formError, error instanceof ApiError ? error.message
      : "Something went wrong. Please try again.");
  }

  async function signIn() {
    const creds = { email: email.value.trim(), password: password.value };
    if (!creds.email) fieldError(email, emailError, "Enter your email address.");
    if (!creds.password) fieldError(password, passwordError, "Enter your password.");
    if (!creds.email || !creds.password) {
      (creds.email ? password : email).focus();
      return;
    }
    const body = await api(MODES[mode].path, { method: "POST", body: creds, auth: false });
    session.token = body.token;
    password.value = "";
    await onSignedIn({ user: body.user, apiKey: body.apiKey || null });
  }

  async function askForLink() {
    const address = email.value.trim();
    if (!address) {
      fieldError(email, emailError, "Enter the email address of your account.");
      email.focus();
      return;
    }
    await api("/auth/forgot-password", { method: "POST", body: { email: address },
      auth: false });
    // The gateway answers the same whether or not the address has an account.
    say(notice, `Check your mail: if an account uses ${address}, a link to set a new `
      + "password is on its way. It works once, for 30 minutes.");
  }

  async function setPassword() {
    if (!newPassword.value) {
      fieldError(newPassword, newPasswordError, "Choose a new password.");
      newPassword.focus();
      return;
    }
    if (confirm.value !== newPassword.value) {
      fieldError(confirm, confirmError, "The two passwords are not the same.");
      confirm.focus();
      return;
    }
    let body;
    try {
      body = await api("/auth/reset-password", { method: "POST", auth: false,
        body: { token: resetToken, password: newPassword.value } });
    } catch (error) {
      if (error instanceof ApiError && error.param === "token") {
        // The link is spent or expired: say so, and offer a new one.
        say(formError, error.message);
        resetToken = null;
        submit.disabled = true;
        return;
      }
      throw error;
    }
    resetToken = null;
    newPassword.value = "";
    confirm.value = "";
    session.token = null; // the reset ended every session, this browser's too
    if (body && typeof body.email === "string") email.value = body.email;
    setMode("signin");
    say(notice, "Your password is set. Sign in with it.");
    (email.value ? password : email).focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    clearErrors();
    say(notice, "");
    const m = MODES[mode];
    const idle = m.submit;
    submit.disabled = true;
    submit.textContent = m.busy;
    try {
      if (mode === "forgot") await askForLink();
      else if (mode === "reset") await setPassword();
      else await signIn();
    } catch (error) {
      showError(error);
    } finally {
      // A spent link leaves the button disabled: only "Back to sign in" helps then.
      if (mode !== "reset" || resetToken) submit.disabled = false;
      submit.textContent = MODES[mode].submit || idle;
    }
  });

  return {
    /** Show the screen, optionally with a notice ("Your session expired…"), or the new
     * password form for a reset link's token. */
    show({ message = "", signup = false, reset = null } = {}) {
      $("app-view").hidden = true;
      view.hidden = false;
      resetToken = reset;
      submit.disabled = false;
      setMode(reset ? "reset" : signup ? "signup" : "signin");
      say(notice, message);
      if (reset) newPassword.focus();
      else (email.value ? password : email).focus();
    },
    hide() { view.hidden = true; },
  };
}
