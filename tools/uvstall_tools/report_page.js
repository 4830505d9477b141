// uvstall-report's page script. Reads the data that report_model.py wrote
// into <script id="uvstall-data"> and draws the overview, the timeline, the
// culprits table, the flame graph and the stall details. No library, no
// request: everything it needs is in this file.
//
// The data (see report_model.py for how it is made):
//   strs   every string once; other tables hold indexes into it (-1: none)
//   mods   [path, build_id] per module
//   pf     physical frames: [module, offset, skipped, chain, source], chain
//          being the logical frames at that address, innermost (inlined)
//          first, each [function, file, line]
//   st     stacks: arrays of pf indexes, innermost first
//   lf     language frames [lang, function, file, line]; lst their stacks
//   groups culprits: {fp, computed, top (pf of the culprit), st (a stack
//          of the group), py (its innermost lf), nostack, sup (stalls of
//          this fingerprint the summaries say were suppressed)}
//   stalls columns, one entry per stall (all its samples): t (start, ms
//          since the epoch), dur, blk, thr, end, st, ls, g, cap, cause (of
//          the first sample), run, tid, loop, sid, hus (handler_us);
//          fl: null, or the flame graph's split [[st, ls, ms], ...];
//          cx: null, or per sample [capture, blocked_ms, time, frames,
//          capture_error, sample, cause, thread, st, ls, fingerprint if
//          not the stall's], thread being [state, syscall, syscall_nr, fd,
//          window_ms, cpu_ms, runqueue_ms, cpu_system_ms, sentinel_late_ms];
//          x: {index: other fields}
//   sums   summary records per fingerprint: [fp, culprit, stalls,
//          suppressed, total_ms, max_ms, runs]
//   metrics columns: t, run, loop, p50_ms, p95_ms, p99_ms, max_ms, utilization
"use strict";
(function () {
  const started = performance.now();
  const D = JSON.parse(document.getElementById("uvstall-data").textContent);
  const ST = D.stalls, MT = D.metrics, META = D.meta;
  const N = ST.t.length;
  const SVGNS = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------- helpers
  const $ = (sel) => document.querySelector(sel);
  const S = (i) => (i == null || i < 0 ? null : D.strs[i]);
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k];
      else if (k === "text") e.textContent = attrs[k];
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), attrs[k]);
      else if (attrs[k] != null) e.setAttribute(k, attrs[k]);
    }
    for (const kid of kids) if (kid != null) e.append(kid.nodeType ? kid : String(kid));
    return e;
  }
  function fmtMs(ms) {
    if (ms == null || !isFinite(ms)) return "?";
    if (ms < 10) return ms.toFixed(2) + " ms";
    if (ms < 1000) return ms.toFixed(ms < 100 ? 1 : 0) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    if (ms < 3600000) {
      const m = Math.floor(ms / 60000), s = Math.floor((ms % 60000) / 1000);
      return m + " min " + String(s).padStart(2, "0") + " s";
    }
    const h = Math.floor(ms / 3600000), m = Math.floor((ms % 3600000) / 60000);
    return h + " h " + String(m).padStart(2, "0") + " min";
  }
  function fmtTime(t, withDate) {
    if (t == null) return "?";
    const iso = new Date(t).toISOString();
    return (withDate ? iso.slice(0, 10) + " " : "") + iso.slice(11, 23);
  }
  function plural(n, word) { return n.toLocaleString("en-US") + " " + word + (n === 1 ? "" : "s"); }
  // C++ names are long mostly because of template arguments and parameter
  // lists: show them as <…> and (…) (the full name is in the tooltip and
  // the stall's detail).
  function shortName(name) {
    if (!name) return name;
    let out = name;
    if (name.indexOf("<") >= 0) {
      let depth = 0;
      out = "";
      for (let i = 0; i < name.length; i++) {
        const c = name[i];
        if (c === "<" && !/operator<?$/.test(name.slice(Math.max(0, i - 9), i))) {
          if (depth++ === 0) out += "<…";
        } else if (c === ">" && depth > 0 && name[i - 1] !== "-") {
          if (--depth === 0) out += ">";
        } else if (depth === 0) out += c;
      }
      if (depth !== 0) out = name;
    }
    // the parameter list: the last balanced (...) at the end ("const" may follow)
    const m = /\)( const)?$/.exec(out);
    if (m) {
      let depth = 0;
      for (let i = m.index; i >= 0; i--) {
        if (out[i] === ")") depth++;
        else if (out[i] === "(" && --depth === 0) {
          if (i > 0 && m.index - i > 1 && !/operator$/.test(out.slice(0, i))) {
            out = out.slice(0, i) + "(…)" + out.slice(m.index + 1);
          }
          break;
        }
      }
    }
    return out;
  }
  function percentile(sorted, p) {
    if (!sorted.length) return null;
    const rank = Math.ceil((p / 100) * sorted.length);
    return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
  }
  function hashHue(s) {
    let h = 2166136261;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
    return (h >>> 0) % 1000 / 1000;
  }

  // ------------------------------------------------------------- frames
  function modPath(pf) { return pf[0] < 0 ? null : S(D.mods[pf[0]][0]); }
  function modName(pf) { const m = modPath(pf); return m ? m.slice(m.lastIndexOf("/") + 1) : null; }
  function addrName(pf) { const m = modName(pf); return m ? m + "+" + pf[1] : pf[1]; }
  function logName(pf, k) { const c = pf[3][k]; return (c && S(c[0])) || addrName(pf); }
  function logWhere(pf, k) {
    const c = pf[3][k], f = c && S(c[1]);
    return f ? f + ":" + (c[2] == null ? "?" : c[2]) : addrName(pf);
  }
  function langName(lf) { return S(lf[1]) || "?"; }
  function langWhere(lf) { return S(lf[2]) ? S(lf[2]) + ":" + (lf[3] == null ? "?" : lf[3]) : ""; }
  const NOSTACK = (cap) => "(no stack: capture " + (cap || "?") + ")";

  // Each culprit's label and its two nearest callers that may be blamed.
  const G = D.groups.map((g, i) => {
    const out = { i, fp: g.fp, computed: g.computed, label: null, where: "", callers: [], py: null };
    if (g.top >= 0) {
      const pf = D.pf[g.top];
      out.label = logName(pf, 0);
      out.where = logWhere(pf, 0);
      const stack = g.st >= 0 ? D.st[g.st] : [];
      const at = stack.indexOf(g.top);
      for (let j = at + 1; j < stack.length && out.callers.length < 2; j++) {
        const c = D.pf[stack[j]];
        if (!c[2]) out.callers.push(logName(c, c[3].length - 1));
      }
    } else {
      out.label = g.fp === "no-stall-record" ? "(stall_end without its stall record)" : NOSTACK(g.nostack);
    }
    if (g.py >= 0) out.py = D.lf[g.py];
    return out;
  });

  // ------------------------------------------------------------- state
  const state = {
    view: null,          // [t0, t1]: the stretch of time looked at, null: all
    group: null,         // the culprit selected in the table
    bin: null,           // stall indexes of the timeline bar clicked
    stall: null,         // the stall shown in detail
    sort: { key: "total", dir: -1 },
    flameMode: "native",
    flameSkip: false,
    flameZoom: [],       // names from the root to the zoomed frame
    search: "",
  };
  const hasLang = ST.ls.some((v) => v >= 0);
  const hasMetrics = MT.t.length > 0;

  function selected() {
    // Stalls in the looked-at stretch of time; all when it is everything
    // (stalls without a time included).
    const out = [];
    const v = state.view;
    for (let i = 0; i < N; i++) {
      if (v) {
        const t = ST.t[i];
        if (t == null || t + ST.dur[i] < v[0] || t > v[1]) continue;
      }
      out.push(i);
    }
    return out;
  }

  // --------------------------------------------------------- header, cards
  function renderHeader() {
    $("#title").textContent = META.title ? "— " + META.title : "";
    const runs = D.runs.length;
    $("#subtitle").textContent = plural(D.counts.records, "line") + " read from " +
      (META.inputs || []).join(", ") + " · " + plural(runs, "run") + " · frames looked up with " +
      META.lookup + " · page made " + META.generated;
  }

  function renderOverview(sel) {
    const durs = sel.map((i) => ST.dur[i]).sort((a, b) => a - b);
    let total = 0;
    for (const d of durs) total += d;
    const groups = new Set(sel.map((i) => ST.g[i]));
    const cards = [
      ["stalls", sel.length.toLocaleString("en-US"), "stalls" + (state.view ? " in view" : "")],
      ["blocked", fmtMs(total), "loop blocked in all"],
      ["longest", fmtMs(durs[durs.length - 1]), "longest stall"],
      ["p50", fmtMs(percentile(durs, 50)), "stall p50"],
      ["p95", fmtMs(percentile(durs, 95)), "stall p95"],
      ["p99", fmtMs(percentile(durs, 99)), "stall p99"],
      ["culprits", groups.size.toLocaleString("en-US"), "culprits"],
      ["bad", D.counts.bad.toLocaleString("en-US"), "bad lines skipped", D.counts.bad ? "bad" : ""],
    ];
    if (D.counts.suppressed) cards.push(["suppressed", D.counts.suppressed.toLocaleString("en-US"),
      "more stalls, not recorded (rate limit)", "warn"]);
    if (D.counts.dropped) cards.push(["dropped", D.counts.dropped.toLocaleString("en-US"),
      "records dropped by uvstall", "warn"]);
    const box = $("#overview");
    box.replaceChildren(...cards.map(([id, v, k, cls]) =>
      el("div", { class: "card " + (cls || ""), id: "card-" + id },
        el("div", { class: "v", text: v == null ? "–" : v }), el("div", { class: "k", text: k }))));
    if (!N) box.append(el("p", { class: "muted", text: "No stall in these reports: the loop never stayed blocked past its threshold." }));
  }

  // ------------------------------------------------------------- timeline
  const TL = { m: { l: 64, r: 14, t: 30, b: 30 }, h: 280 };

  function fullRange() {
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < N; i++) {
      const t = ST.t[i];
      if (t == null) continue;
      lo = Math.min(lo, t);
      hi = Math.max(hi, t + ST.dur[i]);
    }
    for (const t of MT.t) { lo = Math.min(lo, t); hi = Math.max(hi, t); }
    if (!isFinite(lo)) return null;
    const pad = Math.max(500, (hi - lo) * 0.02);
    return [lo - pad, hi + pad];
  }
  const FULL = fullRange();

  function niceTimeStep(span, n) {
    const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4,
      3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 144e5, 216e5, 432e5, 864e5];
    for (const s of steps) if (span / s <= n) return s;
    return Math.ceil(span / n / 864e5) * 864e5;
  }
  function logTicks(lo, hi) {
    const out = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * Math.pow(10, e);
        if (v >= lo && v <= hi) out.push(v);
      }
    }
    return out;
  }

  // Alert windows: where the metrics' lag (p50) stayed above the lag alert
  // for the alert's duration, and where p99 went above the p99 alert. A
  // single stall longer than the alert's duration is such a window too.
  function alertWindows() {
    const lag = META.lag_alert_ms, forMs = META.lag_alert_for_s * 1000, p99 = META.p99_alert_ms;
    const lagWin = [], p99Win = [];
    const series = new Map();
    for (let i = 0; i < MT.t.length; i++) {
      const k = MT.run[i] + "/" + MT.loop[i];
      if (!series.has(k)) series.set(k, []);
      series.get(k).push(i);
    }
    for (const idx of series.values()) {
      idx.sort((a, b) => MT.t[a] - MT.t[b]);
      let runStart = null, prevT = null;
      for (let j = 0; j <= idx.length; j++) {
        const i = idx[j];
        const over = j < idx.length && MT.p50_ms[i] != null && MT.p50_ms[i] > lag;
        if (over && runStart == null) runStart = j > 0 ? MT.t[idx[j - 1]] : MT.t[i];
        if (!over && runStart != null) {
          if (prevT - runStart >= forMs) lagWin.push([runStart, prevT]);
          runStart = null;
        }
        if (j < idx.length) {
          prevT = MT.t[i];
          if (MT.p99_ms[i] != null && MT.p99_ms[i] > p99) {
            const from = j > 0 ? MT.t[idx[j - 1]] : MT.t[i] - 1000;
            p99Win.push([from, MT.t[i]]);
          }
        }
      }
    }
    for (let i = 0; i < N; i++) {
      if (ST.t[i] != null && ST.dur[i] >= forMs && ST.dur[i] > lag) lagWin.push([ST.t[i], ST.t[i] + ST.dur[i]]);
    }
    return { lagWin, p99Win };
  }
  const ALERTS = alertWindows();

  function stallThresholds() {
    const seen = new Set();
    for (const v of ST.thr) if (v != null) seen.add(v);
    for (const r of D.runs) if (r.options && typeof r.options.threshold_ms === "number") seen.add(r.options.threshold_ms);
    return [...seen].sort((a, b) => a - b).slice(0, 4);
  }
  const THRESHOLDS = stallThresholds();

  function renderLegend() {
    const items = [["#9aa3af", "stall (start → end, height = duration)"]];
    if (state.group != null) items.push(["var(--accent)", "stalls of the selected culprit"]);
    if (hasMetrics) items.push(["#0f766e", "lag p50"], ["#7c3aed", "lag p95"], ["#be185d", "lag p99"]);
    items.push(["#e8a33d", "alert: lag > " + fmtMs(META.lag_alert_ms) + " for " + META.lag_alert_for_s + " s"]);
    items.push(["#dc2626", "alert: p99 > " + fmtMs(META.p99_alert_ms)]);
    $("#timeline-legend").replaceChildren(...items.map(([c, t]) =>
      el("span", {}, (() => { const i = el("i"); i.style.background = c; return i; })(), t)));
  }

  function renderTimeline() {
    renderLegend();
    const box = $("#timeline-plot");
    if (!FULL) {
      box.replaceChildren(el("p", { class: "muted", style: "padding:10px", text: "No timed records to draw." }));
      return;
    }
    const W = Math.max(600, box.clientWidth || 1000), H = TL.h, m = TL.m;
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const [x0, x1] = state.view || FULL;
    const X = (t) => m.l + ((t - x0) / (x1 - x0)) * pw;

    // y: a log scale from below the shortest value to above the longest.
    let lo = Infinity, hi = 0;
    const consider = (v) => { if (v != null && v > 0) { lo = Math.min(lo, v); hi = Math.max(hi, v); } };
    const inView = [];
    for (let i = 0; i < N; i++) {
      const t = ST.t[i];
      if (t == null || t + ST.dur[i] < x0 || t > x1) continue;
      inView.push(i);
      consider(ST.dur[i]);
    }
    const mIn = [];
    for (let i = 0; i < MT.t.length; i++) {
      if (MT.t[i] < x0 || MT.t[i] > x1) continue;
      mIn.push(i);
      consider(MT.p50_ms[i]); consider(MT.p95_ms[i]); consider(MT.p99_ms[i]);
    }
    [META.lag_alert_ms, META.p99_alert_ms, ...THRESHOLDS].forEach(consider);
    lo = Math.max(0.01, lo / 1.6);
    hi = hi * 1.6;
    const L0 = Math.log(lo), L1 = Math.log(hi);
    const Y = (v) => m.t + ph - ((Math.log(Math.max(v, lo)) - L0) / (L1 - L0)) * ph;
    const base = m.t + ph;

    const parts = [];
    parts.push(`<svg xmlns="${SVGNS}" width="${W}" height="${H}" id="timeline-svg">`);
    // alert windows, as bands along the top
    const lagLabel = "alert: lag (p50) > " + fmtMs(META.lag_alert_ms) + " for " + META.lag_alert_for_s + " s";
    const p99Label = "alert: p99 > " + fmtMs(META.p99_alert_ms);
    for (const [list, color, label, top] of [[ALERTS.lagWin, "#e8a33d", lagLabel, 14], [ALERTS.p99Win, "#dc2626", p99Label, 8]]) {
      for (const [a, b] of list) {
        if (b < x0 || a > x1) continue;
        const xa = Math.max(m.l, X(a)), xb = Math.min(m.l + pw, X(b));
        parts.push(`<rect class="alert-window" x="${xa}" y="${m.t}" width="${Math.max(1, xb - xa)}" height="${ph}" fill="${color}" opacity="0.06"/>`);
        parts.push(`<rect class="alert-strip" x="${xa}" y="${m.t - top}" width="${Math.max(1.5, xb - xa)}" height="4" fill="${color}"><title>${esc(label)}</title></rect>`);
      }
    }
    // axes
    parts.push('<g class="axis">');
    for (const v of logTicks(lo, hi)) {
      const y = Y(v);
      parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke-dasharray="2,3"/>`);
      parts.push(`<text x="${m.l - 6}" y="${y + 4}" text-anchor="end">${esc(fmtMs(v))}</text>`);
    }
    const span = x1 - x0, step = niceTimeStep(span, Math.max(3, Math.floor(pw / 130)));
    const withDate = new Date(x0).toISOString().slice(0, 10) !== new Date(x1).toISOString().slice(0, 10);
    for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) {
      const x = X(t);
      if (x < m.l + 30 || x > m.l + pw - 40) continue;  // a label cut by the edge helps no one
      const iso = new Date(t).toISOString();
      const label = (withDate ? iso.slice(5, 10) + " " : "") + (step < 1000 ? iso.slice(11, 23) : iso.slice(11, 19));
      parts.push(`<line x1="${x}" x2="${x}" y1="${base}" y2="${base + 4}"/>`);
      parts.push(`<text x="${x}" y="${base + 17}" text-anchor="middle">${esc(label)}</text>`);
    }
    parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${base}" y2="${base}"/>`);
    parts.push(`<text x="${m.l - 6}" y="${m.t - 16}" text-anchor="end">stall / lag</text>`);
    parts.push(`<text x="${m.l + pw}" y="${H - 2}" text-anchor="end">UTC</text>`);
    parts.push("</g>");

    // stalls, one bar per 2-pixel column: the longest stall there
    const bins = new Map();
    const binOf = (i) => Math.floor((Math.max(X(ST.t[i]), m.l) - m.l) / 2);
    for (const i of inView) {
      const k = binOf(i);
      const b = bins.get(k);
      if (!b) bins.set(k, { worst: i, all: [i] });
      else { b.all.push(i); if (ST.dur[i] > ST.dur[b.worst]) b.worst = i; }
    }
    TL.bins = [];
    const drawBars = (filter, color, opacity) => {
      for (const b of bins.values()) {
        let w = b.worst;
        if (filter) {
          w = -1;
          for (const i of b.all) if (filter(i) && (w < 0 || ST.dur[i] > ST.dur[w])) w = i;
          if (w < 0) continue;
        }
        const xa = Math.max(m.l, X(ST.t[w])), xb = Math.min(m.l + pw, X(ST.t[w] + ST.dur[w]));
        const y = Y(ST.dur[w]);
        TL.bins.push(b.all);
        const g = G[ST.g[w]];
        const tip = fmtMs(ST.dur[w]) + " · " + g.label + (b.all.length > 1 ? " · " + plural(b.all.length, "stall") + " here" : "");
        parts.push(`<rect class="tl-bar" data-bin="${TL.bins.length - 1}" x="${xa}" y="${y}" width="${Math.max(2, xb - xa)}" height="${Math.max(1, base - y)}" fill="${color}" opacity="${opacity}"><title>${esc(tip)}</title></rect>`);
      }
    };
    const grp = state.group;
    drawBars(null, grp == null ? "#9aa3af" : "#d1d5db", grp == null ? 0.85 : 0.7);
    if (grp != null) drawBars((i) => ST.g[i] === grp, "#c2410c", 0.95);

    // metrics: p50/p95/p99 lines, the highest value per pixel column
    if (mIn.length) {
      const series = new Map();
      for (const i of mIn) {
        const k = MT.run[i] + "/" + MT.loop[i];
        if (!series.has(k)) series.set(k, []);
        series.get(k).push(i);
      }
      for (const [field, color] of [["p50_ms", "#0f766e"], ["p95_ms", "#7c3aed"], ["p99_ms", "#be185d"]]) {
        for (const idx of series.values()) {
          idx.sort((a, b) => MT.t[a] - MT.t[b]);
          const cols = new Map();
          for (const i of idx) {
            const v = MT[field][i];
            if (v == null) continue;
            const c = Math.round(X(MT.t[i]));
            if (!cols.has(c) || cols.get(c) < v) cols.set(c, v);
          }
          if (!cols.size) continue;
          const pts = [...cols].map(([x, v]) => x + "," + Y(v).toFixed(1)).join(" ");
          parts.push(`<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="1.4" opacity="0.9"><title>lag ${field.slice(0, 3)}</title></polyline>`);
        }
      }
    }

    // threshold lines, labels of lines at the same height joined
    const lines = new Map();
    const addLine = (v, label, color, dash) => {
      if (!lines.has(v)) lines.set(v, { labels: [], color, dash });
      lines.get(v).labels.push(label);
    };
    for (const v of THRESHOLDS) addLine(v, "stall threshold " + fmtMs(v), "#6b7280", "5,4");
    addLine(META.lag_alert_ms, "alert: lag > " + fmtMs(META.lag_alert_ms) + " for " + META.lag_alert_for_s + " s", "#e8a33d", "");
    addLine(META.p99_alert_ms, "alert: p99 > " + fmtMs(META.p99_alert_ms), "#dc2626", "");
    for (const [v, l] of lines) {
      const y = Y(v);
      parts.push(`<line class="threshold" data-ms="${v}" x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="${l.color}" stroke-width="1.3" ${l.dash ? `stroke-dasharray="${l.dash}"` : ""}/>`);
      parts.push(`<text class="thr-label" x="${m.l + pw - 4}" y="${y - 4}" text-anchor="end" fill="${l.color}" stroke="#fff" stroke-width="3" paint-order="stroke">${esc(l.labels.join(" · "))}</text>`);
    }
    parts.push(`<rect id="tl-brush" x="0" y="${m.t}" width="0" height="${ph}" fill="#2563eb" opacity="0.15" visibility="hidden"/>`);
    parts.push("</svg>");
    box.innerHTML = parts.join("");

    $("#timeline-range").textContent = state.view
      ? fmtTime(x0, true) + " – " + fmtTime(x1) + " UTC (" + fmtMs(x1 - x0) + ")"
      : (inView.length < N ? plural(N - inView.length, "stall") + " without a time not drawn" : "");
    $("#timeline-reset").hidden = !state.view;
    TL.geom = { x0, x1, m, pw, W };
  }

  function timelineEvents() {
    const box = $("#timeline-plot");
    let drag = null;
    const tAt = (clientX) => {
      const r = box.getBoundingClientRect(), g = TL.geom;
      const x = Math.min(Math.max(clientX - r.left, g.m.l), g.m.l + g.pw);
      return { x, t: g.x0 + ((x - g.m.l) / g.pw) * (g.x1 - g.x0) };
    };
    box.addEventListener("mousedown", (e) => {
      if (!TL.geom || e.button !== 0) return;
      drag = tAt(e.clientX);
      drag.moved = false;
      e.preventDefault();
    });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const now = tAt(e.clientX), brush = $("#tl-brush");
      if (Math.abs(now.x - drag.x) > 4) drag.moved = true;
      if (brush && drag.moved) {
        brush.setAttribute("x", Math.min(now.x, drag.x));
        brush.setAttribute("width", Math.abs(now.x - drag.x));
        brush.setAttribute("visibility", "visible");
      }
    });
    window.addEventListener("mouseup", (e) => {
      if (!drag) return;
      const d = drag;
      drag = null;
      if (!d.moved) {
        const bar = e.target.closest && e.target.closest(".tl-bar");
        if (bar) {
          const all = TL.bins[+bar.dataset.bin];
          state.bin = all;
          const worst = all.reduce((a, b) => (ST.dur[b] > ST.dur[a] ? b : a));
          renderStallList();
          showStall(worst);
        }
        return;
      }
      const now = tAt(e.clientX);
      state.view = [Math.min(now.t, d.t), Math.max(now.t, d.t)];
      state.bin = null;
      renderAll();
    });
    box.addEventListener("dblclick", () => { state.view = null; state.bin = null; renderAll(); });
    $("#timeline-reset").addEventListener("click", () => { state.view = null; state.bin = null; renderAll(); });
  }

  // -------------------------------------------------------------- culprits
  const COLUMNS = [
    { key: "fp", label: "Fingerprint" },
    { key: "count", label: "Stalls", num: true },
    { key: "total", label: "Total", num: true },
    { key: "max", label: "Max", num: true },
    { key: "cause", label: "Cause" },
    { key: "top", label: "Top frame" },
    { key: "py", label: "Python frame" },
  ];
  // Stalls over the rate limit wrote no record: the summaries count them
  // per fingerprint. The column is there only when there are some.
  if (D.counts.suppressed) COLUMNS.push({ key: "sup", label: "Suppressed", num: true });
  const MAX_ROWS = 300;

  function culpritRows(sel) {
    const rows = new Map();
    for (const i of sel) {
      const g = ST.g[i];
      let r = rows.get(g);
      if (!r) rows.set(g, (r = { g, count: 0, total: 0, max: 0, causes: new Map() }));
      r.count++;
      r.total += ST.dur[i];
      r.max = Math.max(r.max, ST.dur[i]);
      const c = S(ST.cause[i]);
      if (c) r.causes.set(c, (r.causes.get(c) || 0) + 1);
    }
    for (const r of rows.values()) {
      r.causeList = [...r.causes].sort((a, b) => b[1] - a[1]);
      r.cause = r.causeList.length ? r.causeList[0][0] : "";
    }
    return [...rows.values()];
  }

  function sortValue(r, key) {
    const g = G[r.g];
    switch (key) {
      case "fp": return g.fp;
      case "top": return g.label || "";
      case "py": return g.py ? langName(g.py) : "";
      case "sup": return D.groups[r.g].sup || 0;
      default: return r[key];
    }
  }

  function renderCulprits(sel) {
    const rows = culpritRows(sel);
    const { key, dir } = state.sort;
    rows.sort((a, b) => {
      const va = sortValue(a, key), vb = sortValue(b, key);
      const c = typeof va === "number" ? va - vb : String(va).localeCompare(String(vb));
      return c * dir || b.total - a.total || a.g - b.g;
    });
    const table = $("#culprits-table");
    const head = el("tr", {}, ...COLUMNS.map((c) => {
      const th = el("th", { class: c.num ? "num" : "", "data-key": c.key,
        "aria-sort": c.key === key ? (dir > 0 ? "ascending" : "descending") : "none" },
      el("button", { type: "button", text: c.label, onclick: () => {
        state.sort = { key: c.key, dir: c.key === key ? -dir : (c.num ? -1 : 1) };
        renderCulprits(selected());
      } }));
      return th;
    }));
    const body = el("tbody");
    for (const r of rows.slice(0, MAX_ROWS)) {
      const g = G[r.g];
      const fpCell = el("td", { class: "mono", title: g.computed
        ? "computed by uvstall-report (these reports carry no fingerprint): a hash of the function names of the stack's frames outside the skip list, and of its Python frames"
        : "the fingerprint uvstall wrote in the stall's first sample" }, g.fp.length > 16 ? g.fp.slice(0, 16) + "…" : g.fp);
      if (g.computed) fpCell.append(el("span", { class: "badge", text: "computed" }));
      const causeCell = el("td");
      for (const [c, n] of r.causeList.slice(0, 3)) {
        causeCell.append(el("span", { class: "badge " + c, text: r.causeList.length > 1 ? c + " " + n : c }));
      }
      if (!r.causeList.length) causeCell.append(el("span", { class: "muted", text: "—" }));
      const topCell = el("td", {},
        el("div", { class: "fn", title: g.label, text: shortName(g.label) }),
        g.where && g.where !== g.label ? el("div", { class: "where", text: g.where }) : null,
        g.callers.length ? el("div", { class: "where", title: g.callers.join(" ← "),
          text: "← " + g.callers.map(shortName).join(" ← ") }) : null);
      const pyCell = g.py
        ? el("td", {}, el("div", { class: "fn", text: langName(g.py) }), el("div", { class: "where", text: langWhere(g.py) }))
        : el("td", { class: "muted", text: "—" });
      const tr = el("tr", { "data-group": r.g, "data-fingerprint": g.fp, class: state.group === r.g ? "selected" : "",
        onclick: () => selectGroup(state.group === r.g ? null : r.g) },
      fpCell, el("td", { class: "num", text: r.count.toLocaleString("en-US") }),
      el("td", { class: "num", text: fmtMs(r.total) }), el("td", { class: "num", text: fmtMs(r.max) }),
      causeCell, topCell, pyCell);
      if (D.counts.suppressed) {
        const sup = D.groups[r.g].sup || 0;
        tr.append(el("td", { class: "num" + (sup ? "" : " muted"), title: "stalls of this fingerprint over the rate limit: counted by the summary records, not written",
          text: sup ? sup.toLocaleString("en-US") : "—" }));
      }
      body.append(tr);
    }
    table.replaceChildren(el("thead", {}, head), body);
    $("#culprits-note").textContent = (rows.length > MAX_ROWS ? "the " + MAX_ROWS + " first of " + plural(rows.length, "culprit") + " · " : "") +
      "click a row for its stalls, a heading to sort";
  }

  function selectGroup(g) {
    state.group = g;
    state.bin = null;
    for (const tr of document.querySelectorAll("#culprits-table tbody tr")) {
      tr.classList.toggle("selected", +tr.dataset.group === g);
    }
    renderTimeline();
    renderStallList();
  }

  // ------------------------------------------------------------ flame graph
  function buildTree(sel) {
    const root = { name: "all stalls", value: 0, kids: new Map(), count: 0, where: "", kind: "root" };
    // A stall weighs its duration once. When its samples caught different
    // stacks, the duration is split between them (ST.fl: each sample
    // stands for the time until the next one). Stalls with the same split
    // are added up first: sets[stack keys] = [[[stack key, ms]...], stalls].
    const sets = new Map();
    const mode = state.flameMode;
    const keyOf = (st, ls, i) => mode === "python" ? (ls >= 0 ? "l" + ls : "n" + ST.cap[i])
      : (st >= 0 ? "s" + st : "n" + ST.cap[i]);
    for (const i of sel) {
      const fl = ST.fl[i];
      let pieces;
      if (!fl) pieces = [[keyOf(ST.st[i], ST.ls[i], i), ST.dur[i]]];
      else {
        const m = new Map();
        for (const [st, ls, ms] of fl) { const k = keyOf(st, ls, i); m.set(k, (m.get(k) || 0) + ms); }
        pieces = [...m];
      }
      const setKey = pieces.map((p) => p[0]).join(" ");
      let w = sets.get(setKey);
      if (!w) sets.set(setKey, (w = [pieces.map((p) => [p[0], 0]), 0]));
      for (let j = 0; j < pieces.length; j++) w[0][j][1] += pieces[j][1];
      w[1]++;
    }
    let stamp = 0;
    const add = (node, name, where, kind, ms, n) => {
      let kid = node.kids.get(name);
      if (!kid) node.kids.set(name, (kid = { name, value: 0, kids: new Map(), count: 0, where, kind, stamp: 0 }));
      kid.value += ms;
      if (kid.stamp !== stamp) { kid.count += n; kid.stamp = stamp; }  // each stall counted once
      return kid;
    };
    const walkPieces = [];
    for (const [pieces, n] of sets.values()) {
      stamp++;
      root.count += n;
      for (const [k, ms] of pieces) walkPieces.push([k, ms, n, stamp]);
    }
    for (const [k, ms, n, st] of walkPieces) {
      stamp = st;
      root.value += ms;
      let node = root;
      const id = +k.slice(1);
      if (k[0] === "n") {
        add(node, mode === "python" ? "(no Python frames)" : NOSTACK(S(id)), "", "none", ms, n);
      } else if (k[0] === "l") {
        const stack = D.lst[id];
        for (let j = stack.length - 1; j >= 0; j--) {
          const lf = D.lf[stack[j]];
          node = add(node, langName(lf), langWhere(lf), "lang", ms, n);
        }
      } else {
        let stack = D.st[id];
        if (state.flameSkip) {
          const kept = stack.filter((p) => !D.pf[p][2]);
          stack = kept.length ? kept : stack.slice(0, 1);
        }
        for (let j = stack.length - 1; j >= 0; j--) {
          const pf = D.pf[stack[j]];
          const chain = pf[3].length ? pf[3] : [null];
          for (let c = chain.length - 1; c >= 0; c--) {
            const kind = pf[2] ? "skipped" : c < chain.length - 1 ? "inlined" : "native";
            node = add(node, logName(pf, c), logWhere(pf, c), kind, ms, n);
          }
        }
      }
    }
    return root;
  }

  function nodeColor(node, match) {
    if (match) return "#e879f9";
    const h = hashHue(node.name);
    switch (node.kind) {
      case "root": return "#cbd5e1";
      case "none": return "#d1d5db";
      case "skipped": return `hsl(${210 + h * 20},14%,${78 + h * 8}%)`;
      case "lang": return `hsl(${110 + h * 50},55%,${62 + h * 12}%)`;
      case "inlined": return `hsl(${22 + h * 28},85%,${72 + h * 8}%)`;
      default: return `hsl(${8 + h * 40},82%,${58 + h * 12}%)`;
    }
  }

  let FLAME = null;
  // Frames narrower than a pixel are not drawn; past this many, none are:
  // a page of random stacks stays responsive.
  const MAX_FLAME_NODES = 20000;
  function renderFlame(sel, rebuild) {
    if (rebuild || !FLAME) FLAME = { root: buildTree(sel) };
    const root = FLAME.root;
    const box = $("#flame-plot");
    const W = Math.max(600, box.clientWidth || 1000), ROW = 18;
    // the zoomed frame: follow the names from the root as far as they go
    const path = [root];
    for (const name of state.flameZoom) {
      const kid = path[path.length - 1].kids.get(name);
      if (!kid) break;
      path.push(kid);
    }
    state.flameZoom = path.slice(1).map((n) => n.name);
    const focus = path[path.length - 1];
    let re = null;
    if (state.search) {
      const q = state.search.toLowerCase();
      re = { test: (s) => s.toLowerCase().indexOf(q) >= 0 };
    }
    const nodes = [];
    const parts = [];
    let maxDepth = 0, matched = 0;
    // Each drawn node keeps the names from the root to it: a click zooms
    // to exactly that path.
    const rect = (node, trail, x, w, depth, dim, matchAbove) => {
      const match = !!(re && re.test(node.name));
      if (match && !matchAbove) matched += node.value;
      nodes.push({ node, trail });
      const y = depth * ROW;
      maxDepth = Math.max(maxDepth, depth);
      const chars = Math.floor((w - 6) / 6.7);
      const label = chars >= 3 ? (() => {
        const s = shortName(node.name);
        return s.length > chars ? s.slice(0, Math.max(1, chars - 1)) + "…" : s;
      })() : "";
      parts.push(`<g class="fl-node${dim ? " dim" : ""}${match ? " match" : ""}" data-n="${nodes.length - 1}" data-depth="${depth}" data-name="${esc(node.name)}">` +
        `<rect x="${x.toFixed(2)}" y="${y}" width="${Math.max(0.5, w).toFixed(2)}" height="${ROW - 1}" fill="${nodeColor(node, match)}"/>` +
        (label ? `<text x="${(x + 3).toFixed(2)}" y="${y + 12.5}">${esc(label)}</text>` : "") + "</g>");
      return match;
    };
    // ancestors of the focus, full width and dimmed: clicking one zooms out
    for (let d = 0; d < path.length - 1; d++) rect(path[d], state.flameZoom.slice(0, d), 0, W, d, true, false);
    const scale = W / Math.max(focus.value, 1e-9);
    let drawn = 0;
    const walk = (node, trail, x, depth, matchAbove) => {
      const w = node.value * scale;
      if (w < 0.5 || drawn > MAX_FLAME_NODES) return;
      drawn++;
      const m = rect(node, trail, x, w, depth, false, matchAbove);
      let cx = x;
      const kids = [...node.kids.values()].sort((a, b) => b.value - a.value || (a.name < b.name ? -1 : 1));
      for (const kid of kids) { walk(kid, trail.concat(kid.name), cx, depth + 1, matchAbove || m); cx += kid.value * scale; }
    };
    walk(focus, state.flameZoom.slice(), 0, path.length - 1, false);
    const H = (maxDepth + 1) * ROW + 2;
    box.innerHTML = `<svg xmlns="${SVGNS}" width="${W}" height="${H}" id="flame-svg" data-zoom="${esc(focus.name)}">${parts.join("")}</svg>`;
    FLAME.nodes = nodes;
    FLAME.focus = focus;
    const crumbs = $("#flame-path");
    crumbs.replaceChildren();
    path.forEach((n, d) => {
      if (d) crumbs.append(" › ");
      crumbs.append(d === path.length - 1 ? el("b", { text: shortName(n.name) })
        : el("a", { text: shortName(n.name), onclick: () => { state.flameZoom = state.flameZoom.slice(0, d); renderFlame(null, false); } }));
    });
    crumbs.append(el("span", { class: "muted", text: "  " + fmtMs(focus.value) + " in " + plural(focus.count, "stall") }));
    $("#flame-reset").hidden = path.length === 1;
    $("#flame-match").textContent = re ? (matched ? "match: " + fmtMs(matched) + " (" + (100 * matched / Math.max(root.value, 1e-9)).toFixed(1) + "% of all)" : "no match") : "";
  }

  function flameEvents() {
    const box = $("#flame-plot"), tip = $("#tooltip");
    box.addEventListener("click", (e) => {
      const g = e.target.closest(".fl-node");
      if (!g || !FLAME) return;
      state.flameZoom = FLAME.nodes[+g.dataset.n].trail;
      renderFlame(null, false);
    });
    box.addEventListener("mousemove", (e) => {
      const g = e.target.closest(".fl-node");
      if (!g || !FLAME) { tip.hidden = true; return; }
      const node = FLAME.nodes[+g.dataset.n].node, all = FLAME.root.value || 1;
      tip.replaceChildren(el("div", { class: "fn", text: node.name }),
        node.where && node.where !== node.name ? el("div", { class: "where", text: node.where }) : null,
        el("div", { text: fmtMs(node.value) + " · " + (100 * node.value / all).toFixed(1) + "% of all stall time · " + plural(node.count, "stall") +
          (node.kind === "inlined" ? " · inlined" : node.kind === "skipped" ? " · skipped module" : "") }));
      tip.hidden = false;
      const x = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = x + "px";
      tip.style.top = (e.clientY + 16) + "px";
    });
    box.addEventListener("mouseleave", () => { tip.hidden = true; });
    const mode = $("#flame-mode");
    mode.replaceChildren(el("option", { value: "native", text: "native" }));
    if (hasLang) mode.append(el("option", { value: "python", text: "Python" }));
    mode.disabled = !hasLang;
    mode.addEventListener("change", () => { state.flameMode = mode.value; state.flameZoom = []; renderFlame(selected(), true); });
    $("#flame-skip").addEventListener("change", (e) => { state.flameSkip = e.target.checked; state.flameZoom = []; renderFlame(selected(), true); });
    let timer = null;
    $("#flame-search").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.search = e.target.value.trim(); renderFlame(null, false); }, 120);
    });
    $("#flame-reset").addEventListener("click", () => { state.flameZoom = []; renderFlame(null, false); });
  }

  // ---------------------------------------------------------------- stalls
  const MAX_LIST = 500;
  function renderStallList() {
    let list, what;
    if (state.bin) { list = state.bin.slice(); what = " under the timeline bar clicked"; }
    else if (state.group != null) { list = selected().filter((i) => ST.g[i] === state.group); what = " of the selected culprit"; }
    else { list = selected(); what = state.view ? " in the stretch of time in view" : ""; }
    list.sort((a, b) => ST.dur[b] - ST.dur[a] || a - b);
    const body = el("tbody");
    for (const i of list.slice(0, MAX_LIST)) {
      const g = G[ST.g[i]];
      body.append(el("tr", { "data-stall": i, class: state.stall === i ? "selected" : "", onclick: () => showStall(i) },
        el("td", { class: "mono", text: fmtTime(ST.t[i]) }),
        el("td", { class: "num", text: fmtMs(ST.dur[i]) }),
        el("td", {}, el("span", { class: "fn", title: g.label, text: shortName(g.label) }),
          S(ST.cap[i]) !== "ok" ? el("span", { class: "badge", text: S(ST.cap[i]) }) : null)));
    }
    $("#stall-list").replaceChildren(el("thead", {}, el("tr", {}, el("th", { text: "Started (UTC)" }),
      el("th", { class: "num", text: "Lasted" }), el("th", { text: "Culprit" }))), body);
    $("#stalls-note").textContent = plural(list.length, "stall") + what + ", longest first" +
      (list.length > MAX_LIST ? " (the " + MAX_LIST + " longest listed)" : "");
    if (list.length && (state.stall == null || list.indexOf(state.stall) < 0)) showStall(list[0]);
  }

  function fieldValue(v) {
    if (v !== null && typeof v === "object") return el("pre", { class: "json", text: JSON.stringify(v, null, 2) });
    return String(v);
  }

  // A sample's thread, in words: "sleeping in recvfrom on socket:[5];
  // CPU 0.08 ms, run queue 0.06 ms in 10.1 ms".
  function threadText(t) {
    if (!t) return null;
    const [state, sys, nr, fd, win, cpu, rq, sysCpu, late] = t;
    let out = S(state) || "?";
    if (S(sys) || nr != null) out += " in " + (S(sys) || "syscall " + nr);
    if (S(fd)) out += " on " + S(fd);
    out += "; CPU " + fmtMs(cpu) + (sysCpu ? " (kernel " + fmtMs(sysCpu) + ")" : "") +
      ", run queue " + fmtMs(rq) + " in " + fmtMs(win);
    if (late) out += "; sentinel " + fmtMs(late) + " late";
    return out;
  }

  function stackTables(i, st, ls) {
    const kids = [];
    if (ls >= 0) {
      const lst = D.lst[ls];
      kids.push(el("h4", { text: "Python stack (innermost first)" }));
      const body = el("tbody");
      lst.forEach((id, j) => {
        const lf = D.lf[id];
        body.append(el("tr", { class: j === 0 ? "culprit" : "" }, el("td", { class: "num mono", text: "#" + j }),
          el("td", {}, el("span", { class: "fn", text: langName(lf) }), el("div", { class: "where", text: langWhere(lf) })),
          el("td", { class: "where nowrap", text: S(lf[0]) || "" })));
      });
      kids.push(el("table", { class: "stack", id: "python-stack" }, body));
    }
    kids.push(el("h4", { text: "Native stack (innermost first)" }));
    if (st >= 0) {
      const body = el("tbody");
      const top = D.groups[ST.g[i]].top;
      D.st[st].forEach((id, j) => {
        const pf = D.pf[id];
        const chain = pf[3].length ? pf[3] : [null];
        chain.forEach((_, c) => {
          const inlined = c < chain.length - 1;
          body.append(el("tr", { class: (pf[2] ? "skipped" : "") + (id === top && c === 0 ? " culprit" : "") },
            el("td", { class: "num mono", text: c === 0 ? "#" + j : "" }),
            el("td", {},
              el("span", { class: "fn", title: logName(pf, c) }, shortName(logName(pf, c))),
              inlined ? el("span", { class: "badge", text: "inlined" }) : null,
              pf[3][c] && S(pf[3][c][1]) ? el("div", { class: "where", text: logWhere(pf, c) }) : null),
            el("td", { class: "where nowrap", title: (modPath(pf) || "") + (pf[0] >= 0 && D.mods[pf[0]][1] ? "\nbuild-id " + D.mods[pf[0]][1] : ""),
              text: c === 0 ? addrName(pf) : "" })));
        });
      });
      kids.push(el("table", { class: "stack", id: "native-stack" }, body));
      kids.push(el("p", { class: "hint", text: "Greyed: modules on the skip list (never blamed). Highlighted: the culprit." }));
    } else {
      kids.push(el("p", { class: "muted", text: "No stack: the capture " + (S(ST.cap[i]) || "did not happen") + "." }));
    }
    return kids;
  }

  // The stall's samples: taken at detection (sample 0) and again while it
  // lasted; a click shows a sample's stack.
  function samplesTable(i, cx, shown, onPick) {
    const body = el("tbody");
    cx.forEach(([cap, blocked, time, frames, error, sample, cause, thread, st, ls, fp], j) => {
      const has = st >= 0 || ls >= 0;
      body.append(el("tr", { "data-sample": j, class: (j === shown ? "selected" : "") + (has ? "" : " nostack"),
        onclick: has ? () => onPick(j) : null },
      el("td", { class: "num mono", text: sample == null ? "" : sample }),
      el("td", { class: "mono", text: time ? time.slice(11, 23) : "?" }),
      el("td", { class: "num", text: fmtMs(blocked) }),
      el("td", {}, cap === "ok" ? "ok" : el("span", { class: "badge", text: cap || "?" }),
        error ? el("div", { class: "where", text: error }) : null),
      el("td", {}, S(cause) ? el("span", { class: "badge " + S(cause), text: S(cause) }) : "—",
        thread ? el("div", { class: "where", text: threadText(thread) }) : null,
        fp ? el("div", { class: "where", text: "fingerprint " + fp }) : null),
      el("td", { class: "num", text: frames ? plural(frames, "frame") : "no stack" })));
    });
    return el("table", { id: "samples" }, el("thead", {}, el("tr", {},
      ...["sample", "time (UTC)", "blocked", "capture", "cause, thread", "stack"].map((h) => el("th", { text: h })))), body);
  }

  function showStall(i, sampleShown) {
    state.stall = i;
    for (const tr of document.querySelectorAll("#stall-list tbody tr")) tr.classList.toggle("selected", +tr.dataset.stall === i);
    const g = G[ST.g[i]], run = D.runs[ST.run[i]] || {}, x = (ST.x && ST.x[i]) || {};
    const cx = ST.cx[i];
    const box = $("#stall-detail");
    // the first sample: what was seen at detection
    const first = cx ? cx[0] : null;
    const fields = [
      ["started", fmtTime(ST.t[i], true) + " UTC"],
      ["lasted", fmtMs(ST.dur[i]) + (ST.end[i] >= 0 ? " (ended by " + S(ST.end[i]) + ")" : " (no stall_end: still going, or the record was lost)")],
      ["blocked at capture", fmtMs(ST.blk[i]) + (ST.thr[i] != null ? " (threshold " + fmtMs(ST.thr[i]) + ")" : "")],
      ["capture", S(ST.cap[i]) + (ST.hus[i] != null ? " (signal handler " + ST.hus[i] + " µs)" : "")],
      ["cause", (S(ST.cause[i]) || "—") + (first && first[7] ? ": " + threadText(first[7]) : "") +
        (cx && cx.length > 1 ? " (at detection; later samples below)" : "")],
      ["fingerprint", g.fp + (g.computed ? " (computed by uvstall-report)" : "")],
      ["loop", (S(ST.loop[i]) || "?") + " · tid " + ST.tid[i]],
      ["process", "pid " + run.pid + " · run " + run.run_id + (run.host ? " · " + run.host : "") + (run.executable ? " · " + run.executable : "")],
    ];
    for (const k of Object.keys(x)) fields.push([k, x[k]]);
    const dl = el("dl", { class: "fields" });
    for (const [k, v] of fields) dl.append(el("dt", { text: k }), el("dd", {}, fieldValue(v)));
    const kids = [el("h3", { "data-stall-id": ST.sid[i], "data-duration-ms": ST.dur[i],
      text: "Stall " + ST.sid[i] + ": " + fmtMs(ST.dur[i]) + " in " + shortName(g.label) }), dl];
    // the stack shown: the stall's (its first sample with one), or the
    // sample clicked
    let st = ST.st[i], ls = ST.ls[i], shown = -1;
    if (cx) {
      if (sampleShown != null && cx[sampleShown]) { shown = sampleShown; st = cx[shown][8]; ls = cx[shown][9]; }
      else shown = cx.findIndex((c) => c[8] === st && (c[8] >= 0 || c[9] === ls));
      if (cx.length > 1 || cx[0][5] != null) {
        kids.push(el("h4", { text: "Samples" + (cx.length > 1 ? " (click one for its stack)" : "") }));
        kids.push(samplesTable(i, cx, shown, (j) => showStall(i, j)));
      }
    }
    if (shown >= 0 && cx && cx.length > 1) {
      kids.push(el("p", { class: "hint", id: "sample-shown", text: "Stack of sample " + (cx[shown][5] == null ? "#" + shown : cx[shown][5]) +
        (cx[shown][0] !== "ok" ? " (capture " + cx[shown][0] + ")" : "") + "." }));
    }
    kids.push(...stackTables(i, st, ls));
    box.replaceChildren(...kids);
  }

  // ----------------------------------------------------------- runs, input
  function renderInputs() {
    const box = $("#inputs-body");
    const kids = [];
    const runs = el("tbody");
    for (const r of D.runs) {
      const o = r.options || {};
      runs.append(el("tr", {}, el("td", { class: "mono", text: r.run_id }), el("td", { text: r.pid }),
        el("td", { text: r.host || "" }), el("td", { class: "mono", text: r.executable || "" }),
        el("td", { text: r.uvstall_version || "" }),
        el("td", { class: "num", text: o.threshold_ms != null ? fmtMs(o.threshold_ms) : "" }),
        el("td", { class: "num", text: o.interval_ms != null ? fmtMs(o.interval_ms) : "" }),
        el("td", { class: "num", text: r.stalls.toLocaleString("en-US") }),
        el("td", { class: "num", text: r.summary_stalls != null ? r.summary_stalls.toLocaleString("en-US") : "—" }),
        el("td", { class: "num", text: (r.suppressed || 0).toLocaleString("en-US") })));
    }
    kids.push(el("div", { class: "table-wrap" }, el("table", { id: "runs-table" }, el("thead", {}, el("tr", {},
      ...["run_id", "pid", "host", "executable", "uvstall", "threshold", "interval", "stalls recorded",
        "stalls in summaries", "suppressed"].map((h) => el("th", { text: h })))), runs)));
    const c = D.counts;
    const other = Object.entries(c.other_types || {}).map(([k, v]) => k + " " + v).join(", ");
    kids.push(el("ul", {},
      el("li", { text: plural(c.records, "line") + " read: " + c.starts + " start, " + c.stall_records + " stall, " + c.stall_ends + " stall_end, " +
        c.metrics + " metrics, " + c.summaries + " summary" + (other ? ", other types: " + other : "") }),
      el("li", { id: "bad-lines", text: plural(c.bad, "bad line") + " skipped (not JSON, not an object, or a stall with broken frames)" +
        (c.bad > D.bad.length ? "; the first " + D.bad.length + ":" : c.bad ? ":" : "") }),
      c.dropped ? el("li", { text: plural(c.dropped, "record") + " dropped by uvstall before they were written (the 'dropped' fields)" }) : null,
      c.suppressed ? el("li", { id: "suppressed-line", text: plural(c.suppressed, "stall") + " over the rate limit (max_stalls_per_minute) wrote no record: counted by the summary records and the 'suppressed' fields" }) : null,
      el("li", { text: "frames looked up with " + META.lookup }),
      el("li", { text: "skip list (never blamed): " + (D.skip.join(" ") || "(empty)") })));
    if (D.bad.length) {
      kids.push(el("ul", { class: "mono", id: "bad-examples" }, ...D.bad.map(([w, r]) => el("li", { text: w + ": " + r }))));
    }
    if (D.sums.length) {
      // What uvstall itself counted, per fingerprint: suppressed stalls
      // (over the rate limit) are only here.
      const recorded = new Map();
      for (let i = 0; i < N; i++) {
        const g = D.groups[ST.g[i]];
        if (!g.computed) recorded.set(g.fp, (recorded.get(g.fp) || 0) + 1);
      }
      const body = el("tbody");
      for (const [fp, culprit, n, sup, total, max, runs] of D.sums) {
        const rec = recorded.get(fp) || 0;
        body.append(el("tr", { "data-fingerprint": fp == null ? "" : fp, class: rec ? "" : "summary-only" },
          el("td", { class: "mono", text: fp == null ? "(none)" : fp }),
          el("td", {}, el("span", { class: "fn", title: S(culprit) || "", text: shortName(S(culprit)) || "—" })),
          el("td", { class: "num", text: n.toLocaleString("en-US") }),
          el("td", { class: "num", text: sup.toLocaleString("en-US") }),
          el("td", { class: "num", text: rec ? rec.toLocaleString("en-US") : "none" }),
          el("td", { class: "num", text: fmtMs(total) }), el("td", { class: "num", text: fmtMs(max) }),
          el("td", { class: "num", text: runs })));
      }
      kids.push(el("h4", { text: "What the summary records count (" + plural(c.summaries, "summary record") + ")" }));
      kids.push(el("div", { class: "table-wrap", id: "summaries" }, el("table", { id: "summaries-table" }, el("thead", {}, el("tr", {},
        ...["fingerprint", "culprit", "stalls", "of them suppressed", "stall records here", "total", "max", "runs"]
          .map((h) => el("th", { class: h === "fingerprint" || h === "culprit" ? "" : "num", text: h })))), body)));
      if (c.summary_only) {
        kids.push(el("p", { class: "hint", text: plural(c.summary_only, "fingerprint") + " only in the summaries: every stall of " +
          (c.summary_only === 1 ? "it" : "them") + " was over the rate limit (or its records were lost)." }));
      }
    }
    box.replaceChildren(...kids);
  }

  // -------------------------------------------------------------- all
  function renderAll() {
    const sel = selected();
    renderOverview(sel);
    renderTimeline();
    renderCulprits(sel);
    renderFlame(sel, true);
    renderStallList();
  }

  renderHeader();
  renderInputs();
  timelineEvents();
  flameEvents();
  renderAll();
  // Both plots are laid out by their box's width only: a resize that keeps
  // the widths (a taller window, a full-page screenshot) redraws nothing, so
  // it cannot replace the element under a pointer between press and release.
  let resizeTimer = null;
  const plotWidths = () => [$("#timeline-plot"), $("#flame-plot")].map((e) => (e ? e.clientWidth : 0)).join();
  let drawnWidths = plotWidths();
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      const widths = plotWidths();
      if (widths === drawnWidths) return;
      drawnWidths = widths;
      renderTimeline();
      renderFlame(null, false);
    }, 150);
  });
  // For tests and the curious: how long the first drawing took.
  window.uvstallRenderMs = performance.now() - started;
  document.body.dataset.ready = "1";
})();
