// The "Jobs" dialog: the legacy /inference job API (the seed's inference panel). Submit a
// prompt as a job, watch pending and running jobs with their progress, open a result,
// cancel a job. While any job is active the list is polled, backing off from 0.5 s to 5 s;
// with none active (or the dialog closed) polling stops.

import { ApiError, api, optionalApi } from "./api.js";
import { $, ago, h, num, say } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const ACTIVE = new Set(["pending", "processing"]);
const STATUS_LABELS = { pending: "Pending", processing: "Running", completed: "Completed",
  failed: "Failed", cancelled: "Cancelled" };
const POLL_FIRST_MS = 500;
const POLL_MAX_MS = 5000;

/** A short name for a job in button labels: its prompt's first line, cut. */
function jobName(job) {
  const line = String(job.prompt_preview || "").trim().split("\n")[0];
  return line.length > 40 ? `${line.slice(0, 40)}…` : line || job.id;
}

function progressOf(job) {
  if (job.status === "processing") {
    const tokens = job.progress?.completion_tokens ?? 0;
    // No total is known while a job runs: the bar is indeterminate, the count is live.
    return { bar: h("progress", { "aria-label": `Progress of “${jobName(job)}”` }),
      text: `${num(tokens)} ${tokens === 1 ? "token" : "tokens"} so far` };
  }
  if (job.status === "completed") {
    return { bar: h("progress", { max: 1, value: 1, "aria-label": `Progress of “${jobName(job)}”` }),
      text: `${num(job.usage?.completion_tokens)} tokens` };
  }
  if (job.status === "pending") {
    return { bar: h("progress", { max: 1, value: 0, "aria-label": `Progress of “${jobName(job)}”` }),
      text: "waiting for a worker" };
  }
  return { bar: null, text: job.error || "" };
}

/** Wire the dialog. models() lists the model ids the user can call (the Model picker's). */
export function createJobs({ models }) {
  const dialog = $("jobs-dialog");
  const form = $("job-form");
  const modelSelect = $("job-model");
  const prompt = $("job-prompt");
  const promptError = $("job-prompt-error");
  const errorNote = $("jobs-error");
  const list = $("jobs-list");
  const empty = $("jobs-empty");
  const result = $("job-result");
  let timer = 0;
  let delay = POLL_FIRST_MS;
  let generation = 0; // bumps on close/reset, so a late answer can't repaint a closed list

  function fail(error) {
    if (error.status !== 401) say(errorNote, error.message || "That didn't work.");
  }

  function stopPolling() {
    clearTimeout(timer);
    timer = 0;
  }

  function schedule(jobs) {
    stopPolling();
    if (!dialog.open || !jobs.some((j) => ACTIVE.has(j.status))) return;
    timer = setTimeout(refresh, delay);
    delay = Math.min(POLL_MAX_MS, delay * 1.5);
  }

  async function cancel(job, button) {
    button.disabled = true;
    try {
      await api(`/inference/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
    } catch (error) {
      // 409: it finished meanwhile; the refresh shows how.
      if (!(error instanceof ApiError && error.status === 409)) fail(error);
    }
    delay = POLL_FIRST_MS;
    await refresh();
  }

  async function openResult(job) {
    say(errorNote, "");
    try {
      const body = await api(`/inference/${encodeURIComponent(job.id)}/result`);
      const answer = h("div", { class: "markdown job-answer" });
      answer.append(renderMarkdown(String(body.response || "")));
      result.replaceChildren(
        h("h3", { id: "job-result-title", text: `Result of “${jobName(job)}”` }),
        h("p", { class: "muted small", text: `${body.model} · ${num(body.usage?.total_tokens)} `
          + `tokens (${num(body.usage?.prompt_tokens)} prompt + `
          + `${num(body.usage?.completion_tokens)} completion)` }),
        answer);
      result.hidden = false;
      result.focus();
    } catch (error) { fail(error); }
  }

  function row(job) {
    const { bar, text } = progressOf(job);
    const name = jobName(job);
    const actions = h("div", { class: "job-actions" });
    if (job.status === "completed") {
      actions.append(h("button", { type: "button", class: "btn small", text: "Open result",
        "aria-label": `Open result of “${name}”`, onclick: () => openResult(job) }));
    }
    if (ACTIVE.has(job.status)) {
      const btn = h("button", { type: "button", class: "btn small danger", text: "Cancel",
        "aria-label": `Cancel “${name}”` });
      btn.addEventListener("click", () => cancel(job, btn));
      actions.append(btn);
    }
    return h("li", { class: `job-row ${job.status}`, dataset: { jobId: job.id } },
      h("div", { class: "job-main" },
        h("span", { class: "job-prompt", text: name }),
        h("span", { class: "job-meta" },
          h("span", { class: `badge job-status ${job.status}`,
            text: STATUS_LABELS[job.status] || job.status }),
          ` ${job.model} · ${ago(job.created_at)}`),
        bar ? h("div", { class: "job-progress" }, bar,
          h("span", { class: "job-progress-text", text })) :
          h("span", { class: "job-progress-text", text })),
      actions);
  }

  async function refresh() {
    const turn = generation;
    let body;
    try {
      body = await optionalApi("/inference?limit=20");
    } catch (error) {
      if (turn === generation) { fail(error); schedule([]); }
      return;
    }
    if (turn !== generation) return;
    if (body === null) {
      say(errorNote, "This gateway has no job API.");
      form.hidden = true;
      return;
    }
    const jobs = Array.isArray(body.data) ? body.data : [];
    list.replaceChildren(...jobs.map(row));
    empty.hidden = jobs.length > 0;
    schedule(jobs);
  }

  function fillModels() {
    const ids = models();
    const keep = modelSelect.value;
    modelSelect.replaceChildren(...ids.map((id) => h("option", { value: id, text: id })));
    if (ids.includes(keep)) modelSelect.value = keep;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(errorNote, "");
    say(promptError, "");
    prompt.removeAttribute("aria-invalid");
    const text = prompt.value;
    if (!text.trim()) {
      say(promptError, "Write the prompt the job should answer.");
      prompt.setAttribute("aria-invalid", "true");
      prompt.focus();
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      await api("/inference", { method: "POST",
        body: { model: modelSelect.value, prompt: text } });
      prompt.value = "";
      delay = POLL_FIRST_MS;
      await refresh();
    } catch (error) {
      if (error.param === "prompt") {
        say(promptError, error.message);
        prompt.setAttribute("aria-invalid", "true");
      } else {
        fail(error);
      }
    } finally {
      submit.disabled = false;
    }
  });

  dialog.addEventListener("close", () => {
    generation += 1;
    stopPolling();
    result.replaceChildren();
    result.hidden = true;
  });

  return {
    open(selected) {
      say(errorNote, "");
      form.hidden = false;
      fillModels();
      if (selected && models().includes(selected)) modelSelect.value = selected;
      if (!dialog.open) dialog.showModal();
      prompt.focus();
      generation += 1;
      delay = POLL_FIRST_MS;
      return refresh();
    },
    /** Close and forget (sign-out): no job of this user stays in the page. */
    reset() {
      if (dialog.open) dialog.close();
      list.replaceChildren();
      prompt.value = "";
      empty.hidden = true;
    },
  };
}
