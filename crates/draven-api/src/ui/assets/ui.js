// Draven web UI: progressive enhancement only. Every page works without this file.
"use strict";

// A job's live log: follows the server-sent events of the runner's output.
function followLog() {
  const pre = document.getElementById("log");
  if (!pre || !pre.dataset.stream || !window.EventSource) return;
  const state = document.getElementById("job-state");
  const status = document.getElementById("log-status");
  const source = new EventSource(pre.dataset.stream);
  const stick = () => pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  source.addEventListener("log", (e) => {
    const chunk = JSON.parse(e.data);
    const atEnd = stick();
    const span = document.createElement("span");
    span.className = chunk.stream === "stderr" ? "stderr" : "stdout";
    span.textContent = chunk.text;
    pre.appendChild(span);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  const setState = (s) => {
    if (!state) return;
    state.dataset.state = s;
    const badge = state.querySelector(".badge");
    if (badge) badge.textContent = s;
  };
  source.addEventListener("state", (e) => setState(e.data));
  source.addEventListener("end", (e) => {
    setState(e.data);
    if (status) status.textContent = "The job is over (" + e.data + "). Reload the page for its actions.";
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.closest("form").remove();
    source.close();
  });
}

// The deploy form: show the policy of the chosen project and environment.
function showPolicy() {
  const form = document.getElementById("deploy-form");
  if (!form) return;
  const update = () => {
    const key = form.project.value + "/" + form.environment.value;
    let shown = 0;
    form.querySelectorAll(".policy-for").forEach((d) => {
      d.hidden = d.dataset.for !== key;
      if (!d.hidden) shown++;
    });
    let none = document.getElementById("no-policy");
    if (!none) {
      none = document.createElement("p");
      none.id = "no-policy";
      none.className = "muted";
      none.textContent = "This project has no policy for that environment: the deploy will be refused.";
      form.querySelector("#policy-h").after(none);
    }
    none.hidden = shown > 0;
  };
  form.project.addEventListener("change", update);
  form.environment.addEventListener("change", update);
  update();
}

// The functions list: refresh the live counts in place every two seconds.
function refreshFunctions() {
  const table = document.getElementById("functions");
  if (!table || !table.dataset.refresh) return;
  const body = table.querySelector("tbody");
  const tick = async () => {
    try {
      const r = await fetch(table.dataset.refresh, { credentials: "same-origin" });
      if (r.ok && r.headers.get("content-type").startsWith("text/html")) {
        body.innerHTML = await r.text();
      }
    } catch (_) { /* the next tick tries again */ }
  };
  setInterval(tick, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  followLog();
  showPolicy();
  refreshFunctions();
});
