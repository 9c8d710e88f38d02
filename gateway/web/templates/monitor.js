// The live monitor: new decisions and alarms from the server-sent event stream, acknowledgements by any lead.
(function () {
  "use strict";
  const root = document.getElementById("monitor");
  const live = document.getElementById("live");
  const feed = document.querySelector("#feed tbody");
  const open = document.querySelector("#open-alarms tbody");
  const KEEP = 200;  // rows kept in the feed

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }
  function words(code) { return String(code).replace(/_/g, " "); }
  function counted() {
    const n = open.querySelectorAll("tr").length;
    document.getElementById("open-count").textContent = String(n);
    document.getElementById("no-open").hidden = n > 0;
  }
  function prepend(row) {
    feed.insertBefore(row, feed.firstChild);
    while (feed.rows.length > KEEP) feed.deleteRow(feed.rows.length - 1);
  }
  function start(e, cls) {
    const row = document.createElement("tr");
    row.className = cls;
    row.dataset.seq = String(e.seq);
    cell(row, String(e.seq));
    cell(row, e.at);
    cell(row, e.gate || "—");
    cell(row, e.reader || "—");
    return row;
  }

  async function acknowledge(seq, button) {
    button.disabled = true;
    const body = new FormData();
    body.append("csrf_token", root.dataset.csrf);
    const url = root.dataset.ack.replace(/\/0\/ack$/, "/" + seq + "/ack");
    const answer = await fetch(url, { method: "POST", body: body, headers: { "Accept": "application/json" } });
    if (!answer.ok) {
      const problem = await answer.json().catch(() => ({ detail: "refused" }));
      button.disabled = false;
      button.title = problem.detail;
    }
    // The row goes away when the acknowledgement comes back through the stream, as on every other lead's page.
  }
  function ackButton(form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      acknowledge(form.closest("tr").dataset.seq, form.querySelector("button"));
    });
  }
  open.querySelectorAll("form.ack").forEach(ackButton);

  function onDecision(e) {
    const row = start(e, "decision");
    cell(row, (e.allow ? "ALLOW " : "DENY ") + e.reason, e.allow ? "allow" : "deny");
    cell(row, (e.holder || "—") + (e.badge ? " · " + e.badge : ""));
    prepend(row);
  }
  function onAlarm(e) {
    const row = start(e, "alarm");
    cell(row, "ALARM " + words(e.alarm), "deny");
    const who = cell(row, (e.detail || "") + " · ");
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = "not acknowledged";
    who.appendChild(state);
    prepend(row);
    if (open.querySelector('tr[data-seq="' + e.seq + '"]')) return;
    const waiting = start(e, "unacknowledged");
    cell(waiting, words(e.alarm), "deny");
    cell(waiting, e.detail || "");
    cell(waiting, "not acknowledged", "state");
    const td = document.createElement("td");
    const form = document.createElement("form");
    form.className = "ack";
    const button = document.createElement("button");
    button.className = "btn";
    button.type = "submit";
    button.textContent = "Acknowledge";
    form.appendChild(button);
    td.appendChild(form);
    waiting.appendChild(td);
    ackButton(form);
    open.insertBefore(waiting, open.firstChild);
    counted();
  }
  function onAck(e) {
    const waiting = open.querySelector('tr[data-seq="' + e.alarm + '"]');
    if (waiting) waiting.remove();
    counted();
    const logged = feed.querySelector('tr.alarm[data-seq="' + e.alarm + '"] .state');
    if (logged) logged.textContent = "acknowledged by " + e.operator;
    const row = start(e, "ack");
    cell(row, "alarm " + e.alarm + " acknowledged");
    cell(row, e.operator + ": " + e.detail);
    prepend(row);
  }

  const handlers = { decision: onDecision, alarm: onAlarm, ack: onAck };
  const source = new EventSource(root.dataset.stream + "?after=" + encodeURIComponent(root.dataset.after));
  Object.keys(handlers).forEach(function (type) {
    source.addEventListener(type, function (msg) { handlers[type](JSON.parse(msg.data)); });
  });
  source.onopen = function () { live.textContent = "live"; live.className = "live on"; };
  source.onerror = function () { live.textContent = "reconnecting…"; live.className = "live"; };
})();
