// The chat page of velo serve: keeps the conversation here, sends it whole to /v1/chat/completions and shows the
// answer as the server streams it (server-sent events). All URLs are relative to the page, so it works wherever the
// routes are mapped (app.MapGroup("/llm") serves it at /llm/).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    messages: $("messages"), composer: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
    status: $("status"), model: $("model"), modelPicker: $("model-picker"), modelName: $("model-name"),
    settings: $("settings"), settingsToggle: $("settings-toggle"), newChat: $("new-chat"), system: $("system"),
    temperature: $("temperature"), topP: $("top-p"), maxTokens: $("max-tokens"), seed: $("seed"),
    apiKeyField: $("api-key-field"), apiKey: $("api-key"),
  };
  const history = [];
  let models = [];
  let running = null; // { controller } while an answer streams

  function url(path) {
    return new URL(path, document.baseURI).href;
  }

  function headers(json) {
    const result = {};
    if (json) result["Content-Type"] = "application/json";
    const key = ui.apiKey.value.trim();
    if (key) result["Authorization"] = "Bearer " + key;
    return result;
  }

  function setStatus(text, isError) {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", Boolean(isError));
  }

  function askForKey(message) {
    ui.apiKeyField.hidden = false;
    ui.settings.hidden = false;
    ui.settingsToggle.setAttribute("aria-expanded", "true");
    setStatus(message, true);
    ui.apiKey.focus();
  }

  // The server's OpenAI-style error body, or the status line when there is none.
  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch { /* not JSON */ }
    return `${response.status} ${response.statusText}`;
  }

  async function loadModels() {
    let response;
    try {
      response = await fetch(url("v1/models"), { headers: headers(false) });
    } catch (e) {
      setStatus("The server cannot be reached: " + e.message, true);
      return;
    }
    if (response.status === 401) {
      askForKey("This server needs an API key: enter it under Settings.");
      return;
    }
    if (!response.ok) {
      setStatus("Listing the models failed: " + await errorText(response), true);
      return;
    }
    const body = await response.json();
    // Only the models that complete can chat; a server may also serve encoders (embeddings) by name.
    const chats = (m) => !(m.meta && Array.isArray(m.meta.capabilities)) || m.meta.capabilities.includes("completion");
    models = (body.data || []).filter(chats).map((m) => String(m.id));
    const chosen = ui.model.value;
    ui.model.replaceChildren(...models.map((id) => new Option(id, id)));
    if (models.includes(chosen)) ui.model.value = chosen;
    ui.modelPicker.hidden = models.length < 2;
    ui.modelName.textContent = models.length === 1 ? models[0] : "";
    if (ui.status.classList.contains("error")) setStatus("");
  }

  function addMessage(role, text) {
    const element = document.createElement("article");
    element.className = "message " + role;
    const body = document.createElement("div");
    body.className = "body";
    element.append(body);
    ui.messages.append(element);
    showText(element, text);
    return element;
  }

  function showText(element, text) {
    const body = element.querySelector(".body");
    if (element.classList.contains("user")) body.textContent = text;
    else body.replaceChildren(window.VeloMarkdown.render(text));
  }

  function scrollToEnd() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function number(input, parse) {
    const value = input.value.trim();
    return value === "" ? undefined : parse(value);
  }

  function request() {
    const messages = [];
    const system = ui.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...history);
    const body = {
      messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: number(ui.temperature, parseFloat),
      top_p: number(ui.topP, parseFloat),
      max_tokens: number(ui.maxTokens, (v) => parseInt(v, 10)),
      seed: number(ui.seed, (v) => parseInt(v, 10)),
    };
    const model = models.length > 1 ? ui.model.value : models[0];
    if (model) body.model = model;
    return body;
  }

  function setRunning(controller) {
    running = controller ? { controller } : null;
    ui.send.hidden = Boolean(controller);
    ui.stop.hidden = !controller;
    if (!controller) ui.prompt.focus();
  }

  function speed(tokens, first, now) {
    const seconds = (now - first) / 1000;
    // The first token's time is the prompt's; the rate counts the tokens after it.
    const rate = tokens > 1 && seconds > 0 ? ` · ${((tokens - 1) / seconds).toFixed(1)} tokens/s` : "";
    return `${tokens} token${tokens === 1 ? "" : "s"}${rate}`;
  }

  async function send(text) {
    history.push({ role: "user", content: text });
    addMessage("user", text);
    const answer = addMessage("assistant", "");
    answer.classList.add("streaming");
    scrollToEnd();

    const controller = new AbortController();
    setRunning(controller);
    setStatus("Waiting for the first token…");
    let content = "";
    let tokens = 0;
    let usageTokens = null;
    let first = null;
    let finish = null;
    let drawPending = false;
    const draw = () => {
      drawPending = false;
      showText(answer, content);
      setStatus(speed(usageTokens ?? tokens, first ?? performance.now(), performance.now()));
      scrollToEnd();
    };

    try {
      const response = await fetch(url("v1/chat/completions"), {
        method: "POST", headers: headers(true), body: JSON.stringify(request()), signal: controller.signal,
      });
      if (response.status === 401) {
        history.pop();
        answer.remove();
        askForKey("This server needs an API key: enter it under Settings, then send again.");
        return;
      }
      if (!response.ok) throw new Error(await errorText(response));
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let done = false;
      while (!done) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        let boundary;
        while (!done && (boundary = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, boundary);
          buffer = buffer.slice(boundary + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") { done = true; break; }
            const message = JSON.parse(data);
            if (message.error) throw new Error(message.error.message || "the server reported an error");
            if (message.usage) usageTokens = message.usage.completion_tokens;
            for (const choice of message.choices || []) {
              const delta = choice.delta && choice.delta.content;
              if (delta) {
                first ??= performance.now();
                tokens++;
                content += delta;
              }
              if (choice.finish_reason) finish = choice.finish_reason;
            }
          }
          if (!drawPending) {
            drawPending = true;
            requestAnimationFrame(draw);
          }
        }
      }
      draw();
      if (finish === "length") setStatus(ui.status.textContent + " · stopped at the token limit");
    } catch (e) {
      if (e.name === "AbortError") {
        draw();
        setStatus(ui.status.textContent + " · stopped");
      } else {
        const error = document.createElement("p");
        error.className = "error";
        error.textContent = e.message;
        answer.append(error);
        setStatus("The request failed: " + e.message, true);
      }
    } finally {
      answer.classList.remove("streaming");
      if (history.length && history[history.length - 1].role === "user") {
        if (content) history.push({ role: "assistant", content });
        else history.pop(); // nothing came back: the question may be asked again
      }
      setRunning(null);
    }
  }

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.prompt.value.trim();
    if (!text || running) return;
    ui.prompt.value = "";
    send(text);
  });
  ui.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.stop.addEventListener("click", () => running && running.controller.abort());
  ui.newChat.addEventListener("click", () => {
    if (running) running.controller.abort();
    history.length = 0;
    ui.messages.replaceChildren();
    setStatus("");
    ui.prompt.focus();
  });
  ui.settingsToggle.addEventListener("click", () => {
    ui.settings.hidden = !ui.settings.hidden;
    ui.settingsToggle.setAttribute("aria-expanded", String(!ui.settings.hidden));
  });
  ui.apiKey.addEventListener("change", loadModels);

  loadModels();
  ui.prompt.focus();
})();
