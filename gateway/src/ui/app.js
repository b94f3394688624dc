// The dashboard's only script: sign-in, filters, language, chart fetches and
// CSV downloads. Charts arrive as server-rendered, escaped SVG fragments.
// The token lives in sessionStorage (this tab only) and travels only in the
// Authorization header, never in a URL.
"use strict";

(function () {
  const TOKEN_KEY = "fencegate.token";
  const LANG_KEY = "fencegate.lang";
  const $ = (id) => document.getElementById(id);
  let labels = { en: {}, zh: {} };
  let lang = localStorage.getItem(LANG_KEY) ||
    ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");
  let meta = null;
  let bucket = "day";
  // The fleet live view redraws itself; the other charts wait for Apply.
  const LIVE_EVERY_MS = 5000;
  let liveTimer = null;

  const t = (key) => (labels[lang] && labels[lang][key]) || key;

  function applyLabels() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    document.title = t("title") + " · fencegate";
  }

  async function api(path, params) {
    const qs = new URLSearchParams(params || {});
    const resp = await fetch(path + (qs.toString() ? "?" + qs : ""), {
      headers: { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) },
      cache: "no-store",
      credentials: "omit",
    });
    return resp;
  }

  function filterParams() {
    const p = { from: $("from").value, to: $("to").value, lang: lang };
    if (meta && meta.role === "super") p.tenant = $("tenant").value;
    if ($("department").value) p.department = $("department").value;
    return p;
  }

  function option(value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  }

  function fillFilters() {
    const tenant = $("tenant");
    tenant.replaceChildren(...meta.tenants.map((x) => option(x, x)));
    tenant.value = meta.tenant;
    $("tenant-field").hidden = meta.role !== "super";
    const dept = $("department");
    const opts = meta.role === "supervisor" ? [] : [option("", t("all_departments"))];
    dept.replaceChildren(...opts, ...meta.departments.map((d) => option(d, d)));
    dept.disabled = meta.role === "supervisor";
    $("from").value = meta.from;
    $("to").value = meta.to;
    $("tz").textContent = meta.timezone;
  }

  function card(name) {
    const c = document.createElement("section");
    c.className = "card";
    c.id = "chart-" + name;
    c.dataset.chart = name;
    const h = document.createElement("h2");
    const title = document.createElement("span");
    title.className = "title";
    title.dataset.i18n = "chart_" + name;
    h.append(title);
    if (name === "trend") {
      const sel = document.createElement("select");
      sel.id = "bucket";
      for (const b of ["day", "week", "month"]) {
        const o = option(b, "");
        o.dataset.i18n = "by_" + b;
        sel.append(o);
      }
      sel.value = bucket;
      sel.addEventListener("change", () => { bucket = sel.value; loadChart("trend"); });
      h.append(sel);
    }
    const csv = document.createElement("button");
    csv.type = "button";
    csv.className = "csv";
    csv.dataset.i18n = "csv";
    csv.addEventListener("click", () => downloadCsv(name));
    h.append(csv);
    const body = document.createElement("div");
    body.className = "body";
    c.append(h, body);
    return c;
  }

  function chartParams(name) {
    const p = filterParams();
    if (name === "trend") p.bucket = bucket;
    return p;
  }

  async function loadChart(name) {
    const c = $("chart-" + name);
    c.dataset.loaded = "0";
    const body = c.querySelector(".body");
    const resp = await api("/ui/api/" + name + ".html", chartParams(name));
    if (resp.ok) {
      // Server-rendered and escaped there (svg.rs); nothing from the
      // browser is interpolated into it.
      body.innerHTML = await resp.text();
    } else {
      const p = document.createElement("p");
      p.className = "failed";
      p.textContent = ((await resp.json().catch(() => ({}))).error) || resp.statusText;
      body.replaceChildren(p);
    }
    c.dataset.loaded = resp.ok ? "1" : "error";
    // When the page became usable, for the timing run
    // (dashboard_browser.rs, `first_chart_timing`; docs/PERFORMANCE.md).
    if (resp.ok) markOnce("fencegate.first-chart");
  }

  function markOnce(name) {
    if (!performance.getEntriesByName(name).length) performance.mark(name);
  }

  async function loadAll() {
    document.body.dataset.state = "loading";
    await Promise.all(meta.charts.map(loadChart));
    markOnce("fencegate.all-charts");
    document.body.dataset.state = "ready";
  }

  async function downloadCsv(name) {
    const resp = await api("/ui/api/" + name + ".csv", chartParams(name));
    if (!resp.ok) return;
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name + "-" + $("from").value + "-" + $("to").value + ".csv";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async function signIn(tenant) {
    const params = tenant ? { tenant: tenant } : {};
    const resp = await api("/ui/api/meta", params);
    if (!resp.ok) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("dash").hidden = true;
      $("signout").hidden = true;
      $("signin").hidden = false;
      $("signin-error").hidden = resp.status !== 401 && resp.status !== 403;
      document.body.dataset.state = "signed-out";
      return;
    }
    meta = await resp.json();
    $("signin").hidden = true;
    $("signin-error").hidden = true;
    $("dash").hidden = false;
    $("signout").hidden = false;
    fillFilters();
    const charts = $("charts");
    charts.replaceChildren(...meta.charts.map(card));
    applyLabels();
    await loadAll();
    clearInterval(liveTimer);
    if (meta.charts.includes("live")) {
      liveTimer = setInterval(() => {
        if (!$("dash").hidden && document.body.dataset.state === "ready") loadChart("live");
      }, LIVE_EVERY_MS);
    }
  }

  function init() {
    applyLabels();
    $("signin").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      signIn();
    });
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    $("lang").addEventListener("click", () => {
      lang = lang === "zh" ? "en" : "zh";
      localStorage.setItem(LANG_KEY, lang);
      applyLabels();
      if (meta) {
        const keep = { from: $("from").value, to: $("to").value, dept: $("department").value };
        fillFilters();
        $("from").value = keep.from;
        $("to").value = keep.to;
        $("department").value = keep.dept;
        loadAll();
      }
    });
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      loadAll();
    });
    $("tenant").addEventListener("change", () => signIn($("tenant").value));
    if (sessionStorage.getItem(TOKEN_KEY)) {
      signIn();
    } else {
      $("signin").hidden = false;
      document.body.dataset.state = "signed-out";
    }
  }

  fetch("/ui/i18n.json")
    .then((r) => r.json())
    .then((j) => { labels = j; })
    .catch(() => {})
    .finally(init);
})();
