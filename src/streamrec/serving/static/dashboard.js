// The dashboard's script: polls GET /v1/stats every second and draws the charts on <canvas>,
// runs the profile explorer (POST /v1/features/query) and the try-out (GET /v1/recommendations).
//
// Why it is written this way: no framework and no chart library, because `streamrec serve` must
// work offline and ship as package data; one small line/bar/dot chart function covers the six
// charts. After each successful refresh the page sets `data-refreshes` on <body> and, on each
// canvas, `data-points` (values drawn), `data-last` and `data-max` (per series), so a
// headless browser test can see the charts move without reading pixels.
//
// Token: the page itself is served without one. A data route answering 401 shows the token bar;
// the token is kept in sessionStorage (this tab only) and sent as `Authorization: Bearer …`.
// `/#token=…` in the address also sets it (the fragment never reaches the server).
"use strict";

(function () {
  const TOKEN_KEY = "streamrec.token";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed"];
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let config = null;
  let timer = null;
  let lastUsers = "";

  const fromHash = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (fromHash) {
    token = decodeURIComponent(fromHash[1]);
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }

  // -- API ---------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function describe(body, status) {
    if (!body || body.detail === undefined) return `HTTP ${status}`;
    if (Array.isArray(body.detail)) {
      return body.detail.map((d) => `${d.field || (d.loc || []).join(".")}: ${d.msg}`).join("; ");
    }
    return String(body.detail);
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401) {
      askForToken(token ? "that token was refused" : "");
      throw new ApiError(401, "a bearer token is needed");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, describe(body, response.status));
    return body;
  }

  function askForToken(message) {
    $("token-bar").hidden = false;
    $("token-msg").textContent = message;
    $("status").textContent = "waiting for the bearer token";
    if (timer) clearTimeout(timer);
    timer = null;
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-bar").hidden = true;
    start();
  });

  // -- DOM helpers -------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fmt(x, digits = 3) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    if (typeof x !== "number") return String(x);
    const a = Math.abs(x);
    if (a >= 1e6) return (x / 1e6).toFixed(2) + "M";
    if (a >= 1e4) return (x / 1e3).toFixed(1) + "k";
    if (Number.isInteger(x)) return String(x);
    return a >= 100 ? x.toFixed(0) : x.toPrecision(digits);
  }

  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(2) + "%");

  // -- charts ------------------------------------------------------------------------------
  // spec: {series: [{label, values, kind: "line"|"bar"|"dot", axis: "left"|"right", color}],
  //        min, max (left axis), format(y)}
  function drawChart(canvas, t, spec) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 400;
    const h = canvas.clientHeight || 190;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h);
    const hasRight = spec.series.some((s) => s.axis === "right");
    const box = { left: 52, right: w - (hasRight ? 48 : 12), top: 22, bottom: h - 20 };
    const n = t.length;
    const format = spec.format || ((y) => fmt(y));

    const range = (axis) => {
      let lo = 0;
      let hi = -Infinity;
      for (const s of spec.series) {
        if ((s.axis || "left") !== axis) continue;
        for (const v of s.values) {
          if (v === null || v === undefined) continue;
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
      }
      hi = hi > lo ? hi + (hi - lo) * 0.08 : lo + 1;
      const fixed = axis === "left" ? spec : {};
      return { lo: fixed.min !== undefined ? fixed.min : lo, hi: fixed.max !== undefined ? fixed.max : hi };
    };
    const axes = { left: range("left"), right: range("right") };
    const x = (i) => box.left + (n <= 1 ? 0 : (i / (n - 1)) * (box.right - box.left));
    const y = (v, axis) => {
      const r = axes[axis || "left"];
      return box.bottom - ((v - r.lo) / (r.hi - r.lo)) * (box.bottom - box.top);
    };

    // grid and axis labels
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e5e7eb";
    ctx.fillStyle = "#6b7280";
    ctx.lineWidth = 1;
    for (let g = 0; g <= 4; g++) {
      const yy = box.bottom - (g / 4) * (box.bottom - box.top);
      ctx.beginPath();
      ctx.moveTo(box.left, yy);
      ctx.lineTo(box.right, yy);
      ctx.stroke();
      const l = axes.left;
      ctx.textAlign = "right";
      ctx.fillText(format(l.lo + (g / 4) * (l.hi - l.lo)), box.left - 4, yy + 4);
      if (hasRight) {
        const r = axes.right;
        ctx.textAlign = "left";
        ctx.fillText(fmt(r.lo + (g / 4) * (r.hi - r.lo)), box.right + 4, yy + 4);
      }
    }
    if (n > 1) {
      ctx.textAlign = "left";
      ctx.fillText(`−${Math.round(t[n - 1] - t[0])} s`, box.left, h - 5);
      ctx.textAlign = "right";
      ctx.fillText("now", box.right, h - 5);
    }

    let points = 0;
    const last = [];
    const most = [];
    const bars = spec.series.filter((s) => s.kind === "bar");
    const slot = n > 1 ? (box.right - box.left) / (n - 1) : 8;
    spec.series.forEach((s, k) => {
      const color = s.color || COLORS[k % COLORS.length];
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 1.6;
      let open = false;
      let lastValue = null;
      if (s.kind !== "bar" && s.kind !== "dot") ctx.beginPath();
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) {
          open = false;
          return;
        }
        points += 1;
        lastValue = v;
        if (s.kind === "bar") {
          const width = Math.max(1, (slot * 0.8) / bars.length);
          const x0 = x(i) - (slot * 0.4) + bars.indexOf(s) * width;
          const base = y(Math.max(0, axes[s.axis || "left"].lo), s.axis);
          ctx.fillRect(x0, Math.min(base, y(v, s.axis)), width, Math.abs(base - y(v, s.axis)));
        } else if (s.kind === "dot") {
          ctx.beginPath();
          ctx.arc(x(i), y(v, s.axis), 2.5, 0, 2 * Math.PI);
          ctx.fill();
        } else if (open) {
          ctx.lineTo(x(i), y(v, s.axis));
        } else {
          ctx.moveTo(x(i), y(v, s.axis));
          open = true;
        }
      });
      if (s.kind !== "bar" && s.kind !== "dot") {
        ctx.stroke();
        const i = s.values.length - 1 - [...s.values].reverse().findIndex((v) => v !== null && v !== undefined);
        if (lastValue !== null) {
          ctx.beginPath(); // the current value, visible even when a line has one point so far
          ctx.arc(x(i), y(lastValue, s.axis), 3, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
      last.push(lastValue);
      most.push(s.values.reduce((m, v) => (v !== null && v !== undefined && (m === null || v > m) ? v : m), null));
    });

    // legend with the last value of each series
    let lx = box.left;
    ctx.textAlign = "left";
    ctx.font = "12px system-ui, sans-serif";
    spec.series.forEach((s, k) => {
      const text = `${s.label} ${last[k] === null ? "–" : (s.axis === "right" ? fmt : format)(last[k])}`;
      ctx.fillStyle = s.color || COLORS[k % COLORS.length];
      ctx.fillRect(lx, 8, 10, 10);
      ctx.fillStyle = "#374151";
      ctx.fillText(text, lx + 14, 17);
      lx += ctx.measureText(text).width + 30;
    });
    canvas.dataset.points = String(points);
    canvas.dataset.last = JSON.stringify(last);
    canvas.dataset.max = JSON.stringify(most);
  }

  function render(stats) {
    const s = stats.series;
    const rate = (values) => values.map((v) => v / stats.bucket_s);
    drawChart($("chart-ctr"), s.t, {
      series: [{ label: "CTR", values: s.ctr_smooth }],
      format: (v) => (100 * v).toFixed(1) + "%",
    });
    drawChart($("chart-auc"), s.t, {
      series: [{ label: "AUC", values: s.auc, color: COLORS[2] }],
      min: 0,
      max: 1,
      format: (v) => v.toFixed(2),
    });
    drawChart($("chart-qps"), s.t, {
      series: [
        { label: "requests/s", values: s.qps },
        { label: "events/s", values: rate(s.events), color: COLORS[3] },
      ],
    });
    drawChart($("chart-latency"), s.t, {
      series: [
        { label: "p50", values: s.p50_ms },
        { label: "p99", values: s.p99_ms, color: COLORS[1] },
      ],
      format: (v) => fmt(v) + "",
    });
    drawChart($("chart-lag"), s.t, {
      series: [{ label: "lag s", values: s.sync_lag_s, kind: "dot", color: COLORS[4] }],
      format: (v) => fmt(v),
    });
    drawChart($("chart-table"), s.t, {
      series: [
        { label: "rows", values: s.table_rows },
        { label: "admitted", values: s.admitted, kind: "bar", axis: "right", color: COLORS[2] },
        { label: "evicted", values: s.evicted, kind: "bar", axis: "right", color: COLORS[1] },
      ],
    });

    const recent = s.qps.slice(-10);
    $("tile-qps").textContent = recent.length ? fmt(recent.reduce((a, b) => a + b, 0) / recent.length) : "–";
    $("tile-ctr").textContent = pct(stats.totals.ctr);
    $("tile-auc").textContent = stats.auc.value === null ? "–" : stats.auc.value.toFixed(3);
    $("tile-auc-k").textContent = `online AUC (${stats.auc.n} impressions)`;
    const p99 = s.p99_ms.filter((v) => v !== null);
    $("tile-p99").textContent = p99.length ? fmt(p99[p99.length - 1]) + " ms" : "–";
    const model = stats.model;
    $("tile-lag").textContent = model && model.last_sync_lag_s !== null ? fmt(model.last_sync_lag_s) + " s" : "–";
    $("tile-rows").textContent = model ? fmt(Object.values(model.rows).reduce((a, b) => a + b, 0)) : "–";
    $("model-info").textContent = model
      ? `model v${model.version} · ${fmt(model.examples_seen)} examples` + (model.error ? ` · error: ${model.error}` : "")
      : "no model (ranking by the fallback column)";
    $("status").textContent =
      `${stats.totals.requests} requests · ${stats.totals.impressions} impressions · ` +
      `${stats.totals.clicks} clicks · updated ${new Date(stats.now * 1000).toLocaleTimeString()}`;
    const users = (stats.recent_users || []).join("\n");
    if (users !== lastUsers) {  // the users of recent requests, offered in the two forms
      lastUsers = users;
      $("recent-users").replaceChildren(...stats.recent_users.map((u) => el("option", { value: u })));
      $("recent-entities").replaceChildren(...stats.recent_users.map((u) => el("option", { value: "user:" + u })));
    }
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  }

  async function refresh() {
    try {
      render(await api("/v1/stats?seconds=300"));
    } catch (error) {
      if (error.status === 401) return; // the token bar is up; polling resumes when it is given
      $("status").textContent = "stats unavailable: " + error.message;
    }
    timer = setTimeout(refresh, (config && config.refresh_ms) || 1000);
  }

  // -- profile explorer --------------------------------------------------------------------
  $("profile-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = $("profile-out");
    let entity = $("profile-entity").value.trim();
    if (!entity.includes(":")) entity = "user:" + entity;
    const type = entity.slice(0, entity.indexOf(":"));
    const slots = (config && config.entities[type]) || [];
    out.replaceChildren();
    delete out.dataset.entity;
    if (!slots.length) {
      const known = config ? Object.keys(config.entities).join(", ") : "?";
      out.append(el("p", { class: "bad" }, `no profile slot keeps entities of type "${type}" (types: ${known})`));
      return;
    }
    const windows = config.windows;
    const longest = windows[windows.length - 1];
    const features = [];
    for (const s of slots) {
      for (const w of windows) features.push({ slot: s.slot, window: w, agg: "counters", name: `${s.slot}@${w}` });
      features.push({ slot: s.slot, window: longest, agg: "counters", top_k: 5, name: `${s.slot}@${longest}:top` });
    }
    try {
      const answer = await api("/v1/features/query", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ entities: [entity], features }),
      });
      const result = answer.results[0];
      const grid = el("div", { class: "slots" });
      let total = 0;
      for (const s of slots) {
        const asRow = (value) => (typeof value === "number" ? [value] : s.counters.map((c) => value[c]));
        const table = el("table", { "data-slot": s.slot },
          el("caption", {}, s.slot + " ", el("small", {}, `values: ${s.value}`)),
          el("tr", {}, el("th", {}, "window"), ...s.counters.map((c) => el("th", {}, c))));
        for (const w of windows) {
          const row = asRow(result[`${s.slot}@${w}`]);
          total += row.reduce((a, b) => a + (b || 0), 0);
          table.append(el("tr", { "data-window": w }, el("td", {}, w), ...row.map((v) => el("td", {}, fmt(v)))));
        }
        const top = result[`${s.slot}@${longest}:top`] || {};
        const topTable = el("table", { "data-top": s.slot },
          el("caption", {}, el("small", {}, `top ${s.value} values over ${longest}`)),
          el("tr", {}, el("th", {}, s.value), ...s.counters.map((c) => el("th", {}, c))));
        for (const [value, numbers] of Object.entries(top)) {
          topTable.append(el("tr", {}, el("td", {}, value), ...asRow(numbers).map((v) => el("td", {}, fmt(v)))));
        }
        grid.append(el("div", {}, table, Object.keys(top).length ? topTable : null));
      }
      out.append(el("p", { class: "muted" },
        `${entity} at ${new Date(answer.now * 1000).toLocaleString()}` + (total ? "" : " — no activity in these windows")));
      out.append(grid);
      out.dataset.entity = entity;
      out.dataset.total = String(total);
    } catch (error) {
      out.append(el("p", { class: "bad" }, "lookup failed: " + error.message));
    }
  });

  // -- try-out -----------------------------------------------------------------------------
  $("tryout-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = $("tryout-out");
    out.replaceChildren();
    delete out.dataset.items;
    const params = new URLSearchParams({ user_id: $("tryout-user").value.trim(), k: $("tryout-k").value });
    try {
      const rec = await api("/v1/recommendations?" + params.toString());
      const timings = Object.entries(rec.timings_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(" · ");
      out.append(el("p", { class: "muted" }, `request ${rec.request_id} · ${rec.candidates} candidates · ${timings}`));
      const table = el("table", { id: "tryout-table" },
        el("tr", {}, el("th", {}, "#"), el("th", {}, "item"), el("th", {}, "score"), el("th", {}, "source")));
      rec.items.forEach((item, i) => {
        table.append(el("tr", { class: "rec" }, el("td", {}, i + 1), el("td", {}, item.item),
          el("td", {}, item.score.toFixed(4)), el("td", {}, item.source)));
      });
      if (!rec.items.length) out.append(el("p", { class: "muted" }, "no candidates for this user yet"));
      out.append(table);
      out.dataset.items = String(rec.items.length);
    } catch (error) {
      out.append(el("p", { class: "bad" }, "request failed: " + error.message));
    }
  });

  // -- start -------------------------------------------------------------------------------
  async function start() {
    try {
      config = await api("/v1/dashboard/config");
    } catch (error) {
      if (error.status !== 401) $("status").textContent = "config unavailable: " + error.message;
      return;
    }
    $("tryout-k").max = String(config.max_k);
    $("profile-hint").textContent =
      `entity types: ${Object.keys(config.entities).join(", ")} · windows: ${config.windows.join(", ")}`;
    if (timer) clearTimeout(timer);
    refresh();
  }

  start();
})();
