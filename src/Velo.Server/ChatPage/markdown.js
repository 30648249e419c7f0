// A small Markdown renderer for model output. It builds DOM nodes and sets only textContent and a vetted href, never
// innerHTML, so whatever the model writes (<script>, <img onerror=...>, javascript: links) shows as text.
// Covers what chat answers use: fenced code, headings, lists, quotes, rules, paragraphs; inline code, bold,
// italics, strikethrough and http(s) links. An unclosed fence (an answer still streaming) runs to the end.
"use strict";

window.VeloMarkdown = (() => {
  const maxNesting = 8;
  // Inline patterns cost up to the square of a line's length; a longer line is shown as it is.
  const maxInlineLength = 2000;
  const inlineRules = [
    { pattern: /`([^`\n]+)`/g, tag: "code", literal: true },
    { pattern: /\*\*(?=\S)([^\n]*?\S)\*\*/g, tag: "strong" },
    { pattern: /__(?=\S)([^\n]*?\S)__/g, tag: "strong" },
    { pattern: /~~(?=\S)([^\n]*?\S)~~/g, tag: "del" },
    { pattern: /\*(?=[^\s*])([^*\n]*?[^\s*])\*/g, tag: "em" },
    { pattern: /(?<![\w])_(?=[^\s_])([^_\n]*?[^\s_])_(?![\w])/g, tag: "em" },
    { pattern: /\[([^\]\n]+)\]\(([^()\s]+)\)/g, tag: "a" },
  ];

  function safeUrl(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function appendInline(parent, text, depth) {
    if (text.length > maxInlineLength) {
      parent.append(text);
      return;
    }
    let position = 0;
    while (position < text.length) {
      let best = null;
      for (const rule of inlineRules) {
        rule.pattern.lastIndex = position;
        const match = rule.pattern.exec(text);
        if (match && (!best || match.index < best.match.index)) best = { rule, match };
      }
      if (!best) break;
      const { rule, match } = best;
      if (match.index > position) parent.append(text.slice(position, match.index));
      const element = document.createElement(rule.tag);
      if (rule.tag === "a") {
        const href = safeUrl(match[2]);
        if (href === null) {
          parent.append(match[0]);
          position = match.index + match[0].length;
          continue;
        }
        element.href = href;
        element.rel = "noopener noreferrer nofollow";
        element.target = "_blank";
      }
      if (rule.literal || depth >= maxNesting) element.textContent = match[1];
      else appendInline(element, match[1], depth + 1);
      parent.append(element);
      position = match.index + match[0].length;
    }
    if (position < text.length) parent.append(text.slice(position));
  }

  // Lines joined with <br>: a chat answer's line breaks are meant.
  function appendLines(parent, lines) {
    lines.forEach((line, i) => {
      if (i > 0) parent.append(document.createElement("br"));
      appendInline(parent, line, 0);
    });
  }

  const fence = /^\s*(```+|~~~+)\s*([\w+#.-]*)/;
  const heading = /^(#{1,6})\s+(.*)$/;
  const rule = /^\s*([-*_])(\s*\1){2,}\s*$/;
  const quote = /^\s*>\s?(.*)$/;
  const bullet = /^\s*[-*+]\s+(.*)$/;
  const numbered = /^\s*(\d{1,9})[.)]\s+(.*)$/;

  function render(text, depth = 0) {
    const fragment = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if ((m = fence.exec(line))) {
        const marker = m[1];
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(marker)) body.push(lines[i++]);
        i++; // the closing fence, if any
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        if (m[2]) {
          code.className = "language-" + m[2].replace(/[^\w+#.-]/g, "");
          pre.dataset.language = m[2];
        }
        code.textContent = body.join("\n");
        pre.append(code);
        fragment.append(pre);
      } else if ((m = heading.exec(line))) {
        const h = document.createElement("h" + Math.min(m[1].length + 2, 6));
        appendInline(h, m[2], 0);
        fragment.append(h);
        i++;
      } else if (rule.test(line)) {
        fragment.append(document.createElement("hr"));
        i++;
      } else if (quote.test(line)) {
        const quoted = [];
        while (i < lines.length && (m = quote.exec(lines[i]))) { quoted.push(m[1]); i++; }
        const block = document.createElement("blockquote");
        if (depth < maxNesting) block.append(render(quoted.join("\n"), depth + 1));
        else block.textContent = quoted.join("\n");
        fragment.append(block);
      } else if (bullet.test(line) || numbered.test(line)) {
        const ordered = !bullet.test(line);
        const list = document.createElement(ordered ? "ol" : "ul");
        if (ordered) list.start = parseInt(numbered.exec(line)[1], 10);
        const itemPattern = ordered ? numbered : bullet;
        while (i < lines.length && (m = itemPattern.exec(lines[i]))) {
          const item = document.createElement("li");
          appendInline(item, ordered ? m[2] : m[1], 0);
          list.append(item);
          i++;
        }
        fragment.append(list);
      } else if (line.trim() === "") {
        i++;
      } else {
        const paragraph = [];
        while (i < lines.length && lines[i].trim() !== "" && !fence.test(lines[i]) && !heading.test(lines[i]) &&
               !quote.test(lines[i]) && !bullet.test(lines[i]) && !numbered.test(lines[i]) && !rule.test(lines[i])) {
          paragraph.push(lines[i++]);
        }
        const p = document.createElement("p");
        appendLines(p, paragraph);
        fragment.append(p);
      }
    }
    return fragment;
  }

  return { render };
})();
