// Model answers as Markdown. The text is untrusted: raw HTML in it is shown as text
// (marked's html renderer escapes it), and everything marked produces goes through
// DOMPurify before it reaches the page, so no markup from a model can run or load anything.
// A streaming answer re-renders at most once per animation frame, and only the top-level
// blocks that changed are replaced, so finished paragraphs (and a selection in them) stay.

import DOMPurify from "../vendor/dompurify/purify.es.js";
import hljs from "../vendor/highlight.js/highlight.min.js";
import { Marked } from "../vendor/marked/marked.esm.js";
import { copyText, h } from "./dom.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
// Class names marked and highlight.js write; any other class an answer brings is dropped.
const KEPT_CLASS = /^(hljs(-[\w-]+)?|language-[\w+#.-]+)$/;

const marked = new Marked({
  gfm: true,
  renderer: {
    // Raw HTML in an answer is shown as what it is: text.
    html: ({ text }) => escape(text),
    // Images are not fetched (privacy, and the CSP allows none from elsewhere): a link.
    image: ({ href, text }) => `<a href="${escape(href)}">${escape(text || href)}</a>`,
    code({ text, lang }) {
      const language = (lang || "").trim().split(/\s+/)[0].toLowerCase();
      const known = language && hljs.getLanguage(language);
      const body = known
        ? hljs.highlight(text, { language, ignoreIllegals: true }).value : escape(text);
      const cls = known ? ` class="hljs language-${escape(language)}"` : ' class="hljs"';
      return `<pre data-lang="${escape(language)}"><code${cls}>${body}</code></pre>\n`;
    },
  },
});

const purify = DOMPurify(window);
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.hasAttribute("class")) {
    const kept = node.getAttribute("class").split(/\s+/).filter((c) => KEPT_CLASS.test(c));
    if (kept.length) node.setAttribute("class", kept.join(" "));
    else node.removeAttribute("class");
  }
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});
const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "option",
    "video", "audio", "source", "picture", "iframe", "object", "embed", "dialog"],
  // No inline styles (the CSP refuses them), no ids or names to clash with the page's own.
  FORBID_ATTR: ["style", "id", "name"],
  ADD_ATTR: ["target"],
  RETURN_DOM_FRAGMENT: true,
};

/** Wrap each code block with its language and a Copy button (ours, not the model's). */
function decorateCode(fragment) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const lang = pre.getAttribute("data-lang") || "";
    pre.removeAttribute("data-lang");
    const block = h("div", { class: "code-block" },
      h("div", { class: "code-head" },
        h("span", { class: "code-lang", text: lang || "text" }),
        h("button", { type: "button", class: "btn ghost small code-copy", text: "Copy" })));
    pre.replaceWith(block);
    block.append(pre);
  }
}

/** The answer as a sanitised DOM fragment, whitespace between blocks dropped. */
export function renderMarkdown(text) {
  const fragment = purify.sanitize(marked.parse(text), PURIFY);
  for (const node of [...fragment.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && !node.textContent.trim()) node.remove();
  }
  decorateCode(fragment);
  return fragment;
}

/** Make target's children equal to fresh's, replacing only the blocks that differ. */
function patch(target, fresh) {
  const old = [...target.childNodes];
  const next = [...fresh.childNodes];
  next.forEach((node, i) => {
    const current = old[i];
    if (!current) target.append(node);
    else if (!current.isEqualNode(node)) current.replaceWith(node);
  });
  for (const node of old.slice(next.length)) node.remove();
}

/**
 * A Markdown view of a growing text in element `body`: set(text) schedules a render on
 * the next animation frame (many deltas, one render); flush() renders now.
 */
export function markdownView(body) {
  let text = "";
  let frame = 0;
  let shown = null;
  const render = () => {
    frame = 0;
    if (shown === text) return;
    shown = text;
    patch(body, renderMarkdown(text));
  };
  return {
    set(value) {
      text = value;
      if (!frame) frame = requestAnimationFrame(render);
    },
    flush() {
      if (frame) cancelAnimationFrame(frame);
      render();
    },
    get text() { return text; },
  };
}

/** One listener for every code block's Copy button inside `root`. */
export function handleCodeCopy(root) {
  root.addEventListener("click", async (event) => {
    const button = event.target.closest(".code-copy");
    if (!button || !root.contains(button)) return;
    const code = button.closest(".code-block")?.querySelector("code");
    if (!code) return;
    const ok = await copyText(code.textContent);
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}
