// Pennant console: the few live parts. Everything works without script except these helpers:
// live run progress, the audience estimate, variant previews, adding variants, YAML line marks.
"use strict";
(function () {
  const body = document.body;
  const csrf = body.dataset.csrf || "";
  const prefix = body.dataset.prefix || "/console";

  async function call(url, payload) {
    const response = await fetch(url, {
      method: payload === undefined ? "GET" : "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: payload === undefined ? undefined : JSON.stringify(payload),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({ detail: response.statusText }));
    return { ok: response.ok, status: response.status, data };
  }

  function debounce(fn, ms) {
    let timer;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  // Live progress: poll the run view until the run ends; the run page then reloads once to
  // show the final counts, results and deliveries.
  document.querySelectorAll("[data-run-progress]").forEach((box) => {
    const status = box.querySelector("[data-field=status]");
    const bar = box.querySelector("progress");
    const done = box.querySelector("[data-field=done]");
    const onRunPage = document.querySelector("[data-run-live]");
    const wasLive = onRunPage && onRunPage.dataset.runLive === "live";
    async function tick() {
      const { ok, data } = await call(box.dataset.runProgress).catch(() => ({ ok: false }));
      if (ok) {
        const c = data.counts;
        const finished = c.sent + c.failed + c.skipped;
        status.textContent = data.status;
        status.className = "status status-" + data.status;
        bar.max = Math.max(c.planned, 1);
        bar.value = finished;
        done.textContent = c.planned ? `${finished} of ${c.planned}` : "planning…";
        box.dataset.status = data.status;
        document.querySelectorAll("[data-count]").forEach((el) => {
          const key = el.dataset.count;
          if (key in c) el.textContent = c[key];
        });
        if (data.finished) {
          if (wasLive) window.location.reload();
          return;
        }
      }
      setTimeout(tick, 1000);
    }
    tick();
  });

  // The editor: segment mode, live estimate, adding and removing variants.
  document.querySelectorAll("[data-editor]").forEach((form) => {
    const modeInputs = form.querySelectorAll("input[name=segment_mode]");
    const count = form.querySelector("[data-estimate-count]");
    function mode() { const c = form.querySelector("input[name=segment_mode]:checked"); return c ? c.value : "named"; }
    function showMode() {
      form.querySelectorAll("[data-segment-mode]").forEach((el) => { el.hidden = el.dataset.segmentMode !== mode(); });
    }
    const estimate = debounce(async () => {
      let segment;
      if (mode() === "named") {
        segment = form.querySelector("#segment_name").value;
      } else {
        try { segment = JSON.parse(form.querySelector("#segment_json").value || "{}"); }
        catch (e) { count.textContent = "segment: invalid JSON (" + e.message + ")"; return; }
      }
      count.textContent = "counting…";
      const { ok, data } = await call(prefix + "/segments/estimate", { segment });
      count.textContent = ok ? `${data.count.toLocaleString()} customers` : (data.detail || "could not estimate");
      count.className = ok ? "" : "error";
    }, 300);
    modeInputs.forEach((el) => el.addEventListener("change", () => { showMode(); estimate(); }));
    form.querySelector("#segment_name").addEventListener("change", estimate);
    form.querySelector("#segment_json").addEventListener("input", estimate);
    showMode();
    estimate();

    const list = form.querySelector("[data-variants]");
    form.querySelector("[data-add-variant]").addEventListener("click", () => {
      const rows = list.querySelectorAll("[data-variant]");
      const copy = rows[rows.length - 1].cloneNode(true);
      const n = rows.length;
      copy.querySelectorAll(".error").forEach((el) => el.remove());
      copy.querySelectorAll("input, select").forEach((el) => {
        const base = el.name;
        el.id = `${base}_${n}`;
        if (el.tagName === "INPUT") el.value = base === "variant_key" ? String.fromCharCode(65 + n) : "";
        const label = copy.querySelector(`label[for^=${base}_]`);
        if (label) label.htmlFor = el.id;
      });
      list.appendChild(copy);
      copy.querySelector("input").focus();
    });
    list.addEventListener("click", (event) => {
      const button = event.target.closest("[data-remove-variant]");
      if (!button) return;
      if (list.querySelectorAll("[data-variant]").length > 1) button.closest("[data-variant]").remove();
    });
  });

  // Previews: render the chosen variant, channel and customer on every change.
  document.querySelectorAll("[data-preview]").forEach((box) => {
    const frame = box.querySelector("[data-preview-frame]");
    const text = box.querySelector("[data-preview-text]");
    const error = box.querySelector("[data-preview-error]");
    const meta = box.querySelector("[data-preview-meta]");
    const subject = box.querySelector("[data-preview-subject]");
    const render = debounce(async () => {
      const customer = box.querySelector("[data-preview-customer]").value.trim();
      const payload = {
        variant: box.querySelector("[data-preview-variant]").value,
        channel: box.querySelector("[data-preview-channel]").value,
      };
      if (customer) payload.customer_id = Number(customer);
      const { ok, data } = await call(box.dataset.preview, payload);
      error.hidden = ok;
      if (!ok) { error.textContent = data.detail || "could not render"; return; }
      const who = data.customer ? `customer ${data.customer.id} (${data.customer.first_name})` : "a sample customer";
      meta.textContent = `Variant ${data.variant} · ${data.channel} · ${who}`;
      subject.textContent = data.subject ? "Subject: " + data.subject : "";
      if (data.html) { frame.hidden = false; text.hidden = true; frame.srcdoc = data.html; }
      else { frame.hidden = true; text.hidden = false; text.textContent = data.text || data.body || JSON.stringify(data, null, 2); }
      box.dataset.rendered = `${data.variant}:${data.channel}:${data.customer ? data.customer.id : ""}`;
    }, 250);
    box.querySelectorAll("select, input").forEach((el) => el.addEventListener(el.tagName === "INPUT" ? "input" : "change", render));
    render();
  });

  // The YAML editor: line numbers, error lines marked, and "Line N" jumps to the line.
  document.querySelectorAll("[data-yaml]").forEach((area) => {
    const gutter = area.parentElement.querySelector("[data-gutter]");
    const bad = new Set((area.dataset.errorLines || "").split(",").filter(Boolean).map(Number));
    function numbers() {
      const n = area.value.split("\n").length;
      gutter.innerHTML = "";
      for (let i = 1; i <= n; i++) {
        const span = document.createElement("span");
        span.textContent = i;
        if (bad.has(i)) span.className = "bad";
        gutter.appendChild(span);
        gutter.appendChild(document.createTextNode("\n"));
      }
    }
    area.addEventListener("input", numbers);
    area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
    numbers();
    document.querySelectorAll("[data-goto-line]").forEach((button) => button.addEventListener("click", () => {
      const line = Number(button.dataset.gotoLine);
      const lines = area.value.split("\n");
      const start = lines.slice(0, line - 1).reduce((s, l) => s + l.length + 1, 0);
      area.focus();
      area.setSelectionRange(start, start + lines[line - 1].length);
      area.scrollTop = Math.max(0, (line - 5) * parseFloat(getComputedStyle(area).lineHeight));
    }));
  });

  // Suggestions: copy one into the chosen variant's subject in the editor (not saved until Save).
  document.querySelectorAll("[data-copy-suggestion]").forEach((button) => button.addEventListener("click", () => {
    const item = button.closest("[data-suggestion]");
    const index = item.querySelector("[data-copy-variant]").value;
    const field = document.getElementById(`variant_subject_${index}`);
    if (!field) return;
    field.value = button.dataset.copySuggestion;
    field.focus();
  }));

  const errors = document.getElementById("form-errors");
  if (errors) errors.focus();
})();
