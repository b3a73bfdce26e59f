// circlet pages: small vanilla JS. Pages work without it; it adds live updates,
// expandable jobs and windowed step logs.
"use strict";

function $(sel, root) { return (root || document).querySelector(sel); }
function $all(sel, root) { return Array.from((root || document).querySelectorAll(sel)); }

// ---- All Pipelines: expand/collapse jobs, live refresh of the table
function bindTwisties(root) {
  $all("button.twisty", root).forEach(btn => btn.addEventListener("click", () => {
    const row = btn.closest("tr").nextElementSibling;
    const open = btn.getAttribute("aria-expanded") !== "true";
    btn.setAttribute("aria-expanded", String(open));
    if (row && row.classList.contains("jobs")) row.hidden = !open;
  }));
}

function liveRegion(id) {
  const box = document.getElementById(id);
  if (!box || !box.dataset.fragment) return;
  let busy = false, pending = false;
  async function reload() {
    if (busy) { pending = true; return; }
    busy = true;
    try {
      const res = await fetch(box.dataset.fragment, { headers: { "Accept": "text/html" } });
      if (res.ok) { box.innerHTML = await res.text(); bindTwisties(box); }
    } finally { busy = false; if (pending) { pending = false; reload(); } }
  }
  const events = new EventSource("/ui-api/events");
  events.addEventListener("changed", reload);
  // Belt and braces: while something runs, refresh even if an event is missed.
  setInterval(() => { if ($("[data-running='1']", box)) reload(); }, 4000);
}

// ---- Job page: windowed step logs, search, live output
const MAX_DOM_CHARS = 2000000;  // beyond this the view keeps the tail only (download has all)

function escapeHtml(s) { return s.replace(/[&<>]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c])); }

function renderLines(text, firstLine, needle) {
  const lines = text.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const low = needle ? needle.toLowerCase() : "";
  return lines.map((line, i) => {
    let body = escapeHtml(line);
    if (low && line.toLowerCase().includes(low)) body = "<mark>" + body + "</mark>";
    return '<span class="ln">' + (firstLine + i) + "</span>" + body;
  }).join("\n") + "\n";
}

class StepLog {
  constructor(details, jobId) {
    this.d = details; this.job = jobId; this.index = Number(details.dataset.step);
    this.pre = $("pre.log", details); this.info = $(".loginfo", details); this.more = $("button.more", details);
    this.search = $("input.logsearch", details);
    this.text = ""; this.start = 0; this.firstLine = 1; this.lastId = 0; this.loaded = false; this.total = 0;
    this.more.addEventListener("click", () => this.loadEarlier());
    this.search.addEventListener("input", () => this.paint());
    this.search.addEventListener("keydown", e => { if (e.key === "Enter") this.searchAll(); });
  }
  url(extra) { return `/ui-api/jobs/${this.job}/steps/${this.index}/log${extra || ""}`; }
  async load() {
    const res = await fetch(this.url());
    if (!res.ok) return;
    const w = await res.json();
    this.text = w.text; this.start = w.start; this.firstLine = w.first_line; this.lastId = w.last_id;
    this.total = w.total; this.loaded = true; this.paint();
  }
  async loadEarlier() {
    const end = this.start, begin = Math.max(0, end - 262144);
    const res = await fetch(this.url(`?start=${begin}&end=${end}`));
    if (!res.ok) return;
    const w = await res.json();
    this.text = w.text + this.text; this.start = w.start; this.firstLine = w.first_line; this.paint();
  }
  append(chunk) {
    if (!this.loaded || chunk.id <= this.lastId) return;
    this.lastId = chunk.id;
    if (chunk.clipped) { this.text += "\n[… output too fast to show live; download the step output for all of it …]\n"; }
    this.text += chunk.text; this.total += chunk.text.length;
    if (this.text.length > MAX_DOM_CHARS) {
      const cut = this.text.length - MAX_DOM_CHARS;
      const nl = this.text.indexOf("\n", cut);
      const drop = nl < 0 ? cut : nl + 1;
      this.firstLine += (this.text.slice(0, drop).match(/\n/g) || []).length;
      this.start += drop; this.text = this.text.slice(drop);
    }
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 30;
    this.paint();
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }
  paint() {
    this.pre.innerHTML = renderLines(this.text, this.firstLine, this.search.value);
    this.more.hidden = this.start <= 0;
    this.info.textContent = this.start > 0 ? `showing the last ${this.text.length.toLocaleString()} characters` : "";
  }
  async searchAll() {
    const q = this.search.value.trim();
    if (!q) return;
    const res = await fetch(`/ui-api/jobs/${this.job}/steps/${this.index}/search?q=${encodeURIComponent(q)}`);
    if (!res.ok) return;
    const hits = (await res.json()).hits;
    this.info.textContent = `${hits.length}${hits.length >= 200 ? "+" : ""} matching lines in the whole log`;
    if (hits.length && hits[0].offset < this.start) {
      const res2 = await fetch(this.url(`?start=${hits[0].offset}`));
      if (res2.ok) {
        const w = await res2.json();
        this.text = w.text; this.start = w.start; this.firstLine = w.first_line; this.lastId = w.last_id; this.paint();
      }
    }
  }
}

function jobPage() {
  const box = document.getElementById("steps");
  if (!box) return;
  const job = box.dataset.job;
  const logs = new Map();
  function bind(d) {
    if (logs.has(d.dataset.step)) return;
    const log = new StepLog(d, job);
    logs.set(d.dataset.step, log);
    d.addEventListener("toggle", () => { if (d.open && !log.loaded) log.load(); });
    if (d.open) log.load();
  }
  $all("details.step", box).forEach(bind);
  if (box.dataset.live !== "1") return;
  const events = new EventSource(`/ui-api/jobs/${job}/events`);
  events.addEventListener("step", e => {
    const s = JSON.parse(e.data);
    let d = $(`details.step[data-step="${s.index}"]`, box);
    if (!d) { location.reload(); return; }  // a new step: simplest is to redraw
    d.dataset.status = s.status;
    const dot = $(".dot", d); dot.className = "dot s-" + s.status; dot.title = s.status;
    dot.textContent = s.status === "success" ? "✓" : (s.status === "failed" || s.status === "timedout") ? "✗" : s.status === "running" ? "◌" : "•";
    $(".dur", d).textContent = s.duration == null ? "…" : (s.duration < 60 ? Math.round(s.duration) + "s" : Math.floor(s.duration / 60) + "m " + Math.round(s.duration % 60) + "s");
  });
  events.addEventListener("output", e => {
    const c = JSON.parse(e.data);
    const log = logs.get(String(c.index));
    if (log) log.append(c);
  });
  events.addEventListener("done", () => { events.close(); setTimeout(() => location.reload(), 300); });
}

document.addEventListener("DOMContentLoaded", () => {
  bindTwisties(document);
  liveRegion("pipelines");
  liveRegion("workflow");
  jobPage();
});
