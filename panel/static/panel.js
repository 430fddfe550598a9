// hostpanel's only script (no inline scripts anywhere: the pages work under `script-src 'self'`).
// Data comes from data-* attributes. Handlers are delegated on document, so they keep working when
// the live status swaps in a freshly rendered <main>.
document.documentElement.classList.add("js");

function panelLang() { return document.documentElement.lang || undefined; }

// --------------------------------------------------------------------------- navigation menu
(function () {
  var toggle = document.getElementById("menu-toggle");
  var nav = document.getElementById("site-nav");
  if (!toggle || !nav) return;
  toggle.addEventListener("click", function () {
    var open = nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
})();

// --------------------------------------------------------------------------- times in the viewer's zone
// <time datetime="...+00:00" data-local="short|medium"> is rendered in UTC by the server; show it in
// the viewer's own time zone and language.
function panelLocalTimes(root) {
  (root || document).querySelectorAll("time[data-local]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (isNaN(when)) return;
    var style = el.dataset.local === "short" ? "short" : "medium";
    try {
      el.textContent = new Intl.DateTimeFormat(panelLang(), { dateStyle: style, timeStyle: "short" }).format(when);
      el.title = when.toISOString();
    } catch (e) { /* keep the server's UTC text */ }
  });
}

// --------------------------------------------------------------------------- copy, confirm
function panelCopy(text, button) {
  function done() {
    var old = button.textContent;
    button.textContent = "✓";
    setTimeout(function () { button.textContent = old; }, 1200);
  }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () {});
    return;
  }
  var area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  try { document.execCommand("copy"); done(); } catch (e) { /* nothing to do */ }
  document.body.removeChild(area);
}

document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (button) {
    var text = button.dataset.copy;
    if (text === undefined && button.dataset.copyFrom) {
      text = (document.getElementById(button.dataset.copyFrom) || {}).textContent;
    }
    if (text === undefined) {
      var box = button.closest(".revealed");
      text = box ? box.querySelector(".secret-value").textContent : "";
    }
    panelCopy(text || "", button);
    return;
  }
  var hide = event.target.closest("button.hide-secret");
  if (hide) {
    var shown = hide.closest(".revealed");
    shown.querySelector(".secret-value").textContent = "";
    shown.hidden = true;
    shown.parentNode.querySelector("form.reveal").hidden = false;
  }
});

document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (form.classList.contains("reveal")) {
    event.preventDefault();
    panelReveal(form);
  }
});

// --------------------------------------------------------------------------- reveal a credential
// POST the account password; the answer (no-store) is shown in place and never stored anywhere.
function panelReveal(form) {
  var box = form.closest(".credential");
  var error = form.querySelector(".error");
  error.hidden = true;
  var button = form.querySelector("button[type=submit]");
  button.disabled = true;
  fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin",
                       headers: { "Accept": "application/json" }, cache: "no-store" })
    .then(function (r) { return r.json().catch(function () { return {}; }).then(function (b) { return [r, b]; }); })
    .then(function (pair) {
      var r = pair[0], body = pair[1];
      button.disabled = false;
      form.querySelector("input[name=password]").value = "";
      if (r.ok && body.value !== undefined) {
        var shown = box.querySelector(".revealed");
        shown.querySelector(".secret-value").textContent = body.value;
        shown.hidden = false;
        form.hidden = true;
        return;
      }
      var message = (body.error && body.error.message) || (r.status === 429 ? error.dataset.limit : "") || r.statusText;
      error.textContent = message || "Error " + r.status;
      error.hidden = false;
    })
    .catch(function () { button.disabled = false; });
}

// --------------------------------------------------------------------------- live status
// Poll status.json while something is in progress, update the badge and the words, and swap in the
// freshly rendered page once the service settles (connect details, usage, history).
(function () {
  var card = document.getElementById("status-card");
  if (!card || !card.dataset.poll) return;
  var settled = ["active", "suspended", "failed", "needs_reconcile", "terminated", "cancelled", "pending_payment"];
  var initial = card.dataset.status;
  var url = card.dataset.poll;
  var customer = card.dataset.audience === "customer";
  function render(data) {
    var badge = document.querySelector("#status .badge");
    if (badge) {
      badge.className = "badge status-" + data.status;
      badge.dataset.status = data.status;
      badge.textContent = data.status_label || data.status.replace("_", " ");
    }
    card.dataset.status = data.status;
    var detail = document.getElementById("status-detail");
    var headline = document.getElementById("status-headline");
    if (customer && data.message) {
      if (headline) headline.textContent = data.message.headline;
      if (detail) detail.textContent = data.message.text;
      card.className = card.className.replace(/tone-\w+/, "tone-" + data.message.tone);
    } else if (detail) {
      detail.textContent = data.status_detail || "";
      detail.className = (data.status === "failed" ? "error" : "muted") + " wrap";
    }
    var op = document.getElementById("status-operation");
    if (op) {
      op.hidden = !(data.operation && data.operation.label);
      if (!op.hidden) op.textContent = data.operation.label + " …";
    }
    var progress = document.getElementById("progress");
    if (progress) progress.hidden = !(data.operation || data.status === "provisioning" || data.status === "terminating");
  }
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        if (fresh) {
          document.querySelector("main").innerHTML = fresh.innerHTML;
          panelLocalTimes();
          panelUsageCharts();
        }
      });
  }
  function busy(data) { return data.operation || settled.indexOf(data.status) < 0; }
  function tick() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { setTimeout(tick, 5000); return; }
        render(data);
        if (busy(data)) { setTimeout(tick, 1500); }
        else if (data.status !== initial || card.dataset.wasBusy) { refresh(); }
      })
      .catch(function () { setTimeout(tick, 5000); });
  }
  var progress = document.getElementById("progress");
  var op = progress && !progress.hidden;
  if (op || document.getElementById("action-running") || settled.indexOf(initial) < 0) {
    card.dataset.wasBusy = "1";
    tick();
  }
})();

// --------------------------------------------------------------------------- usage charts
// One chart per metric from /api/v1/services/<id>/usage: the plan's limit as a dashed line, units
// scaled (bytes -> MiB/GiB), times in the viewer's zone, a message until the first sample, and no
// chart for a metric that never changed (its value is shown as text instead).
var PANEL_BYTE_UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB"];

function panelScale(max, unit) {
  if (unit !== "bytes") return { factor: 1, unit: unit };
  var step = 0, factor = 1;
  while (max / factor >= 1024 && step < PANEL_BYTE_UNITS.length - 1) { factor *= 1024; step += 1; }
  return { factor: factor, unit: PANEL_BYTE_UNITS[step] };
}

function panelNumber(value) {
  try { return new Intl.NumberFormat(panelLang(), { maximumFractionDigits: 2 }).format(value); }
  catch (e) { return String(value); }
}

function panelUsageCharts() {
  var box = document.getElementById("usage-charts");
  if (!box) return;
  fetch(box.dataset.src, { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : { samples: [] }; })
    .then(function (data) {
      var samples = data.samples || [];
      if (!samples.length) {
        box.innerHTML = "";
        var p = document.createElement("p");
        p.className = "muted";
        p.id = "usage-empty";
        p.textContent = box.dataset.empty;
        box.appendChild(p);
        return;
      }
      var series = {};
      var order = [];
      samples.forEach(function (s) {
        (s.metrics || []).forEach(function (m) {
          if (!series[m.name]) {
            series[m.name] = { label: m.label, unit: m.unit, points: [], limit: m.limit };
            order.push(m.name);
          }
          series[m.name].points.push({ at: new Date(s.at), y: Number(m.value) });
          if (m.limit !== null && m.limit !== undefined) series[m.name].limit = m.limit;
        });
      });
      box.innerHTML = "";
      var constants = document.createElement("ul");
      constants.className = "constant-metrics";
      var timeFormat = new Intl.DateTimeFormat(panelLang(), { hour: "2-digit", minute: "2-digit" });
      order.forEach(function (key) {
        var s = series[key];
        var values = s.points.map(function (p) { return p.y; });
        var max = Math.max.apply(null, values.concat([s.limit || 0]));
        var scale = panelScale(max, s.unit);
        var unitText = scale.unit === "count" ? "" : " " + scale.unit;
        var first = values[0];
        var constant = values.every(function (v) { return v === first; });
        if (constant) {
          var li = document.createElement("li");
          li.dataset.metric = key;
          li.textContent = s.label + ": " + panelNumber(first / scale.factor) + unitText +
            (s.limit ? " / " + panelNumber(s.limit / scale.factor) + unitText : "") + " (" + box.dataset.constant + ")";
          constants.appendChild(li);
          return;
        }
        if (!window.Chart) return;
        var wrap = document.createElement("div");
        wrap.className = "chart";
        var canvas = document.createElement("canvas");
        canvas.dataset.metric = key;
        canvas.setAttribute("role", "img");
        canvas.setAttribute("aria-label", s.label);
        wrap.appendChild(canvas);
        box.appendChild(wrap);
        var labels = s.points.map(function (p) { return timeFormat.format(p.at); });
        var datasets = [{ label: s.label + " (" + scale.unit + ")", data: values.map(function (v) { return v / scale.factor; }),
                          borderColor: "#2557d6", tension: 0.2, pointRadius: values.length < 30 ? 2 : 0 }];
        if (s.limit) {
          datasets.push({ label: box.dataset.limitLabel + " " + panelNumber(s.limit / scale.factor) + unitText,
                          data: values.map(function () { return s.limit / scale.factor; }),
                          borderColor: "#b42318", borderDash: [6, 4], pointRadius: 0, fill: false });
        }
        new Chart(canvas, {
          type: "line",
          data: { labels: labels, datasets: datasets },
          options: { animation: false, responsive: true, maintainAspectRatio: false,
                     plugins: { legend: { labels: { boxWidth: 12 } } },
                     scales: { y: { beginAtZero: true, title: { display: true, text: scale.unit } } } }
        });
      });
      if (constants.children.length) box.appendChild(constants);
    });
}

// --------------------------------------------------------------------------- order form preview
// Ask the server what each name will become ("will be j-rgen-m-ller") before the customer orders.
(function () {
  var form = document.getElementById("order-form");
  if (!form || !form.dataset.preview) return;
  var timer = null;
  function show(name, info) {
    var note = form.querySelector('[data-preview-for="' + name + '"]');
    if (!note) return;
    var text = info && (info.error || info.note) || "";
    note.textContent = text;
    note.hidden = !text;
    note.className = "preview " + (info && info.error ? "error" : "note");
  }
  function check() {
    var query = new URLSearchParams();
    form.querySelectorAll("input[name^=param_], select[name^=param_]").forEach(function (input) {
      if (input.value) query.append(input.name, input.value);
    });
    fetch(form.dataset.preview + "?" + query.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        Object.keys(data.fields || {}).forEach(function (name) { show(name, data.fields[name]); });
      })
      .catch(function () {});
  }
  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 400);
  });
})();

document.addEventListener("DOMContentLoaded", function () {
  panelLocalTimes();
  panelUsageCharts();
});
