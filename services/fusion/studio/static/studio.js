// Fusion Studio's one script: the chat room's live parts.
//
// It calls the gateway's own POST /v1/chat/completions (stream, with `fusion.progress`), with the
// session cookie and the X-Fusion-Studio header (a header a cross-site form cannot send). Model text
// goes into the page with textContent only; rendered Markdown comes from POST /studio/api/render,
// which sanitizes it on the server. No inline scripts or handlers exist: the page's CSP forbids them.
"use strict";

(() => {
  const STUDIO_HEADERS = { "Content-Type": "application/json", "X-Fusion-Studio": "1" };
  const EVENT_PREFIX = "response.fusion_call.";

  // -- small DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // A decimal string without an exponent: the gateway writes Decimals as Python prints them, and
  // Python prints a ten-millionth of a dollar as "1E-7".
  function plainDecimal(value) {
    const text = String(value).trim();
    const match = /^([-+]?)(\d+)(?:\.(\d*))?[eE]([-+]?\d+)$/.exec(text);
    if (!match) return text;
    const [, sign, whole, fraction = "", exponent] = match;
    let digits = whole + fraction;
    let point = whole.length + Number(exponent);
    if (point <= 0) {
      digits = "0".repeat(1 - point) + digits;
      point = 1;
    } else if (point > digits.length) {
      digits += "0".repeat(point - digits.length);
    }
    let result = digits.slice(0, point).replace(/^0+(?=\d)/, "");
    const rest = digits.slice(point).replace(/0+$/, "");
    if (rest) result += "." + rest;
    return sign === "-" ? "-" + result : result;
  }

  function usd(value) {
    if (value === null || value === undefined || value === "") return "—";
    const text = plainDecimal(value);
    if (!/^-?\d+(\.\d+)?$/.test(text)) return "$" + text;
    const [whole, fraction = ""] = text.split(".");
    return "$" + whole + "." + fraction.padEnd(2, "0");
  }

  function tokens(usage) {
    if (!usage) return "—";
    const input = usage.input_tokens ?? usage.prompt_tokens ?? 0;
    const output = usage.output_tokens ?? usage.completion_tokens ?? 0;
    return `${input.toLocaleString()} in · ${output.toLocaleString()} out`;
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "—";
    return ms < 10000 ? `${Math.round(ms).toLocaleString()} ms` : `${(ms / 1000).toFixed(1)} s`;
  }

  function who(refs) {
    return (refs || []).map((ref) => `member ${ref.member} (${ref.model})`).join(", ") || "—";
  }

  // An API error body ({"error": {"message", "code"}}) in words.
  function errorText(body, status) {
    const error = body && body.error;
    if (error && typeof error === "object") {
      const code = error.code ? ` (${error.code})` : "";
      return `${error.message || "the request failed"}${code}`;
    }
    return status ? `the gateway answered HTTP ${status}` : "the request failed";
  }

  async function postJson(path, body) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: STUDIO_HEADERS,
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401) window.location.assign("/studio/login");
      throw new Error(errorText(data, response.status));
    }
    return data;
  }

  async function renderMarkdown(target, markdown) {
    try {
      const data = await postJson("/studio/api/render", { markdown });
      target.innerHTML = data.html; // sanitized by the server (nh3)
      target.classList.add("markdown");
      target.classList.remove("plain");
      target.dataset.rendered = "true";
    } catch (_) {
      target.textContent = markdown; // keep the plain text
    }
  }

  // -- server-sent events of a fetch body

  async function* sseData(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
      if (done) return;
    }
  }

  // -- one turn of the conversation: the question, member cards, analysis, answer, cost

  class Turn {
    constructor(container, question) {
      this.cards = new Map();
      this.answer = "";
      this.failed = false;
      this.note = null; // what stays under the answer once it is done (a partial result's reason)
      this.requestId = null;
      this.node = el("article", { className: "turn card", "data-testid": "turn", "data-state": "streaming" });
      this.question = el("div", { className: "question plain", "data-testid": "question", text: question });
      this.members = el("div", { className: "members", "data-testid": "members" });
      this.analysis = el("section", { className: "analysis", "data-testid": "analysis", "data-state": "waiting" });
      this.analysis.hidden = true;
      this.fused = el("div", { className: "fused plain", "data-testid": "fused-answer", "data-state": "waiting" });
      this.status = el("p", { className: "muted small turn-status", "data-testid": "turn-status", text: "Asking the panel…" });
      this.error = el("p", { className: "error", "data-testid": "error", role: "alert" });
      this.error.hidden = true;
      this.cost = el("span", { className: "cost", "data-testid": "cost" });
      this.link = el("a", { className: "detail-link small", "data-testid": "detail-link" });
      this.link.hidden = true;
      const footer = el("footer", { className: "turn-footer" }, this.cost, this.link);
      this.node.append(
        el("h3", { className: "you" }, "You"),
        this.question,
        this.members,
        this.analysis,
        el("h3", {}, "Fused answer"),
        this.fused,
        this.status,
        this.error,
        footer,
      );
      container.append(this.node);
      this.node.scrollIntoView({ block: "start", behavior: "smooth" });
    }

    setRequestId(id) {
      if (!id || this.requestId) return;
      this.requestId = id;
      this.node.dataset.requestId = id;
      this.link.href = `/studio/activity/${encodeURIComponent(id)}`;
      this.link.textContent = "Details";
      this.link.hidden = false;
    }

    card(index, model) {
      let card = this.cards.get(index);
      if (!card) {
        const node = el("div", {
          className: "member-card",
          "data-testid": "member-card",
          "data-member-index": index,
          "data-model": model || "",
          "data-status": "pending",
        });
        const title = el("strong", { className: "model", text: model || `member ${index}` });
        const badge = el("span", { className: "status status-pending", "data-testid": "member-status", text: "pending" });
        const meta = el("div", { className: "meta small muted" });
        const tokensOut = el("span", { "data-testid": "member-tokens", text: "—" });
        const latency = el("span", { "data-testid": "member-latency", text: "—" });
        const cost = el("span", { "data-testid": "member-cost", text: "—" });
        meta.append(tokensOut, " · ", latency, " · ", cost);
        const text = el("div", { className: "member-text plain", "data-testid": "member-text" });
        const error = el("p", { className: "error small", "data-testid": "member-error" });
        error.hidden = true;
        node.append(el("header", {}, el("span", { className: "index", text: `#${index}` }), title, badge), meta, text, error);
        // Cards stay in member order whatever order the events come in.
        const after = [...this.cards.entries()].filter(([i]) => i > index).sort(([a], [b]) => a - b)[0];
        this.members.insertBefore(node, after ? after[1].node : null);
        card = { node, title, badge, tokensOut, latency, cost, text, error };
        this.cards.set(index, card);
      }
      if (model && !card.node.dataset.model) {
        card.node.dataset.model = model;
        card.title.textContent = model;
      }
      return card;
    }

    updateCard(index, fields) {
      const card = this.card(index, fields.model);
      if (fields.status) {
        card.node.dataset.status = fields.status;
        card.badge.textContent = fields.status;
        card.badge.className = `status status-${fields.status}`;
      }
      if (fields.usage) card.tokensOut.textContent = tokens(fields.usage);
      if (fields.latency_ms !== undefined && fields.latency_ms !== null) card.latency.textContent = duration(fields.latency_ms);
      if (fields.cost_usd !== undefined && fields.cost_usd !== null) {
        card.cost.textContent = usd(fields.cost_usd);
        card.node.dataset.costUsd = plainDecimal(fields.cost_usd);
      }
      if (fields.text && card.text.dataset.rendered !== "true" && card.text.textContent !== fields.text) {
        card.text.textContent = fields.text;
        renderMarkdown(card.text, fields.text);
      }
      if (fields.error) {
        card.error.textContent = fields.error;
        card.error.hidden = false;
      }
    }

    progress(event) {
      const kind = String(event.type || "").replace(EVENT_PREFIX, "");
      if (kind === "panel.added") {
        this.updateCard(event.member_index, { model: event.model, status: "running" });
      } else if (kind === "panel.completed" || kind === "panel.failed") {
        this.updateCard(event.member_index, {
          ...event,
          status: event.status || (kind === "panel.completed" ? "ok" : "error"),
        });
      } else if (kind === "analysis.in_progress") {
        this.status.textContent = "The judge is reading the answers…";
        if (this.analysis.dataset.state === "waiting") {
          this.analysis.hidden = false;
          this.analysis.dataset.state = "in_progress";
          this.analysis.replaceChildren(el("h3", {}, "Analysis"), el("p", { className: "muted", text: "The judge is analysing the answers…" }));
        }
      } else if (kind === "analysis.completed") {
        this.showAnalysis(event.analysis);
        this.status.textContent = "The judge is writing the answer…";
      }
    }

    showAnalysis(analysis) {
      this.analysis.hidden = false;
      this.analysis.dataset.state = "completed";
      const parts = [el("h3", {}, "Analysis")];
      if (!analysis) {
        parts.push(el("p", { className: "muted", text: "No analysis (the strategy needs none)." }));
        this.analysis.replaceChildren(...parts);
        return;
      }
      const list = (title, items, line, testid) => {
        if (!items || !items.length) return;
        parts.push(el("h4", { text: title }));
        parts.push(el("ul", { className: testid || "" }, ...items.map((item) => el("li", testid ? { "data-testid": testid } : {}, ...line(item)))));
      };
      list("Consensus", analysis.consensus, (point) => [point]);
      if (analysis.contradiction_details && analysis.contradiction_details.length) {
        list("Contradictions", analysis.contradiction_details, (item) => [
          el("strong", { text: item.topic }),
          el("ul", {}, ...(item.stances || []).map((stance) => el("li", {}, stance.stance, el("span", { className: "who", text: ` — ${who(stance.answers)}` })))),
          item.verdict ? el("p", { className: "verdict", text: `Verdict: ${item.verdict}` }) : null,
        ], "contradiction");
      } else {
        list("Contradictions", analysis.contradictions, (point) => [point], "contradiction");
      }
      if (analysis.unique_insight_details && analysis.unique_insight_details.length) {
        list("Unique insights", analysis.unique_insight_details, (item) => [
          item.insight,
          el("span", { className: "who", text: ` — ${who([item.answer])}` }),
        ], "insight");
      } else {
        list("Unique insights", analysis.unique_insights, (point) => [point], "insight");
      }
      if (analysis.partial_coverage_details && analysis.partial_coverage_details.length) {
        list("Partial coverage", analysis.partial_coverage_details, (item) => [
          item.point,
          el("span", { className: "who", text: ` — covered by ${who(item.answers)}` }),
        ]);
      } else {
        list("Partial coverage", analysis.partial_coverage, (point) => [point]);
      }
      list("Blind spots", analysis.blind_spots, (point) => [point]);
      this.analysis.replaceChildren(...parts);
    }

    appendAnswer(text) {
      this.answer += text;
      this.fused.dataset.state = "streaming";
      this.fused.textContent = this.answer;
      this.status.textContent = "The judge is writing the answer…";
    }

    summary(fusion, usage) {
      if (!fusion) return;
      this.setRequestId(fusion.request_id);
      for (const member of fusion.members || []) {
        this.updateCard(member.index, member);
      }
      if (fusion.analysis && this.analysis.dataset.state !== "completed") this.showAnalysis(fusion.analysis);
      if (this.analysis.dataset.state === "in_progress") this.showAnalysis(null);
      const cost = fusion.cost || {};
      if (cost.total_usd !== undefined) {
        this.cost.dataset.costUsd = plainDecimal(cost.total_usd);
        const judge = fusion.judge ? ` · judge ${fusion.judge.model} ${usd(fusion.judge.cost_usd)}` : "";
        this.cost.textContent = `Cost ${usd(cost.total_usd)} (members ${usd(cost.members_usd)}${judge}) · ${tokens(usage)}`;
      }
      this.node.dataset.status = fusion.status || "";
      if (fusion.status === "partial" && fusion.error) {
        this.note = `Partial result: ${fusion.error}`;
        this.status.textContent = this.note;
      }
    }

    fail(message) {
      this.failed = true;
      this.node.dataset.state = "error";
      this.error.textContent = message;
      this.error.hidden = false;
      this.status.textContent = "";
      if (!this.answer) {
        this.fused.dataset.state = "none";
        this.fused.textContent = "No answer.";
      }
    }

    async finish() {
      if (this.failed) return;
      this.node.dataset.state = "done";
      this.status.textContent = this.note || "";
      if (!this.answer) {
        this.fused.dataset.state = "none";
        this.fused.textContent = "No answer.";
        return;
      }
      await renderMarkdown(this.fused, this.answer);
      this.fused.dataset.state = "done";
    }
  }

  // -- the chat room

  function chatRoom(root) {
    const $ = (selector) => root.querySelector(selector);
    const conversation = document.getElementById("conversation");
    const prompt = document.getElementById("prompt");
    const send = document.getElementById("send");
    const estimate = document.getElementById("estimate");
    const members = $("#members");
    const maxMembers = Number(root.dataset.maxMembers || 8);
    const history = [];
    let busy = false;
    let estimateTimer = null;
    let estimateSeq = 0;

    const mode = () => (document.getElementById("mode-custom").checked ? "custom" : "preset");

    function showPreset() {
      const option = $("#preset").selectedOptions[0];
      const summary = $("#preset-summary");
      if (!option) return;
      const parts = [`Members: ${option.dataset.panel}`, `judge: ${option.dataset.judge}`, `strategy: ${option.dataset.strategy}`];
      if (option.dataset.quorum) parts.push(`quorum: ${option.dataset.quorum}`);
      summary.textContent = parts.join(" · ") + (option.dataset.description ? `. ${option.dataset.description}` : "");
    }

    function showMode() {
      const custom = mode() === "custom";
      $("#preset-fields").hidden = custom;
      $("#custom-fields").hidden = !custom;
      refreshMembers();
    }

    function refreshMembers() {
      const rows = members.querySelectorAll(".member-row");
      rows.forEach((row, i) => {
        row.querySelector(".remove-member").disabled = rows.length <= 1;
        row.querySelector(".member-model").setAttribute("aria-label", `Member ${i + 1}`);
      });
      $("#add-member").disabled = rows.length >= maxMembers;
    }

    function addMember() {
      const template = document.getElementById("member-row-template");
      const rows = members.querySelectorAll(".member-row");
      if (rows.length >= maxMembers) return;
      const row = template.content.firstElementChild.cloneNode(true);
      const last = rows[rows.length - 1];
      if (last) row.querySelector(".member-model").value = last.querySelector(".member-model").value;
      members.append(row);
      refreshMembers();
      scheduleEstimate();
    }

    // The request body, as the gateway's chat completions read it (openai_types.FusionOptions).
    function body(question) {
      const fusion = { progress: true };
      let model = "fusion";
      if (mode() === "custom") {
        fusion.panel = [...members.querySelectorAll(".member-model")].map((select) => select.value);
      } else {
        model = `fusion/${$("#preset").value}`;
      }
      const judge = $("#judge").value;
      if (judge) fusion.judge = judge;
      const strategy = $("#strategy").value;
      if (strategy) fusion.strategy = strategy;
      const quorum = $("#quorum").value;
      if (quorum) fusion.quorum = Number(quorum);
      const deadline = $("#deadline").value;
      if (deadline) fusion.deadline_s = Number(deadline);
      return {
        model,
        stream: true,
        messages: [...history, { role: "user", content: question }],
        fusion,
      };
    }

    function scheduleEstimate() {
      clearTimeout(estimateTimer);
      estimateTimer = setTimeout(updateEstimate, 350);
    }

    async function updateEstimate() {
      const question = prompt.value.trim();
      const seq = ++estimateSeq;
      if (!question) {
        estimate.textContent = "Type a question to see its estimated cost.";
        delete estimate.dataset.usd;
        estimate.dataset.state = "empty";
        estimate.removeAttribute("title");
        return;
      }
      estimate.dataset.state = "loading";
      try {
        const data = await postJson("/studio/api/estimate", body(question));
        if (seq !== estimateSeq) return;
        estimate.textContent = `Estimated cost: up to ${usd(data.usd)}`;
        estimate.dataset.usd = plainDecimal(data.usd);
        estimate.dataset.state = "ready";
        estimate.title = data.basis;
      } catch (error) {
        if (seq !== estimateSeq) return;
        estimate.textContent = `No estimate: ${error.message}`;
        delete estimate.dataset.usd;
        estimate.dataset.state = "error";
      }
    }

    async function ask(question) {
      const empty = document.getElementById("conversation-empty");
      if (empty) empty.remove();
      const turn = new Turn(conversation, question);
      const request = body(question);
      let response;
      try {
        response = await fetch("/v1/chat/completions", {
          method: "POST",
          credentials: "same-origin",
          headers: STUDIO_HEADERS,
          body: JSON.stringify(request),
        });
      } catch (error) {
        turn.fail(`The gateway could not be reached: ${error.message}`);
        return;
      }
      if (!response.ok) {
        let data = null;
        try {
          data = await response.json();
        } catch (_) {
          data = null;
        }
        if (data && data.fusion) turn.summary(data.fusion, null);
        turn.fail(errorText(data, response.status));
        if (response.status === 401) window.location.assign("/studio/login");
        return;
      }
      try {
        for await (const data of sseData(response)) {
          if (data === "[DONE]") break;
          let payload;
          try {
            payload = JSON.parse(data);
          } catch (_) {
            continue;
          }
          handle(turn, payload);
        }
      } catch (error) {
        turn.fail(`The stream broke off: ${error.message}`);
      }
      await turn.finish();
      if (!turn.failed && turn.answer) {
        history.push({ role: "user", content: question }, { role: "assistant", content: turn.answer });
      }
    }

    function handle(turn, payload) {
      if (payload.error) {
        if (payload.fusion) turn.summary(payload.fusion, null);
        turn.fail(errorText(payload));
        return;
      }
      if (typeof payload.id === "string") turn.setRequestId(payload.id.replace(/^chatcmpl-/, ""));
      if (payload.fusion_progress) turn.progress(payload.fusion_progress);
      const choice = (payload.choices || [])[0];
      const text = choice && choice.delta && choice.delta.content;
      if (text) turn.appendAnswer(text);
      if (payload.fusion) turn.summary(payload.fusion, payload.usage);
    }

    async function submit(event) {
      if (event) event.preventDefault();
      const question = prompt.value.trim();
      if (!question || busy) return;
      busy = true;
      send.disabled = true;
      root.dataset.busy = "true";
      prompt.value = "";
      try {
        await ask(question);
      } finally {
        busy = false;
        send.disabled = false;
        root.dataset.busy = "false";
        prompt.focus();
        scheduleEstimate();
      }
    }

    document.getElementById("ask-form").addEventListener("submit", submit);
    prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) submit(event);
    });
    prompt.addEventListener("input", scheduleEstimate);
    $("#panel-form").addEventListener("change", (event) => {
      if (event.target.name === "mode") showMode();
      if (event.target.id === "preset") showPreset();
      scheduleEstimate();
    });
    $("#panel-form").addEventListener("submit", (event) => event.preventDefault());
    $("#add-member").addEventListener("click", addMember);
    members.addEventListener("click", (event) => {
      const button = event.target.closest(".remove-member");
      if (!button || members.querySelectorAll(".member-row").length <= 1) return;
      button.closest(".member-row").remove();
      refreshMembers();
      scheduleEstimate();
    });
    document.getElementById("new-chat").addEventListener("click", () => {
      if (busy) return;
      history.length = 0;
      conversation.replaceChildren();
      prompt.focus();
      scheduleEstimate();
    });
    showPreset();
    showMode();
    root.dataset.ready = "true";
  }

  function start() {
    const chat = document.getElementById("chat");
    if (chat) chatRoom(chat);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
