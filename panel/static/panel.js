// Live status on the service page: poll status.json while something is in progress, update the
// badge and detail, and reload once the service reaches a settled status (to show details/usage).
(function () {
  var card = document.getElementById("status-card");
  if (!card) return;
  var settled = ["active", "suspended", "failed", "needs_reconcile", "terminated", "cancelled", "pending_payment"];
  var initial = card.dataset.status;
  var url = card.dataset.poll;
  function render(data) {
    var badge = document.querySelector("#status .badge");
    badge.className = "badge status-" + data.status;
    badge.dataset.status = data.status;
    badge.textContent = data.status.replace("_", " ");
    card.dataset.status = data.status;
    var detail = document.getElementById("status-detail");
    detail.textContent = data.status_detail || "";
    detail.className = data.status === "failed" ? "error" : "muted";
    document.getElementById("progress").hidden = !(data.operation || data.status === "provisioning" || data.status === "terminating");
  }
  // Swap in the freshly rendered page body (details, usage, history) without a navigation.
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        if (fresh) { document.querySelector("main").innerHTML = fresh.innerHTML; panelUsageCharts(); }
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
  var op = !document.getElementById("progress").hidden;
  if (op || settled.indexOf(initial) < 0) { card.dataset.wasBusy = "1"; tick(); }
})();

// Usage charts (Chart.js): one small line chart per metric, from /api/v1/services/<id>/usage.
function panelUsageCharts() {
  var box = document.getElementById("usage-charts");
  if (!box || !window.Chart) return;
  fetch(box.dataset.src, { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : { samples: [] }; })
    .then(function (data) {
      if (!data.samples.length) return;
      box.innerHTML = "";
      var series = {};
      data.samples.forEach(function (s) {
        s.metrics.forEach(function (m) {
          var key = m.name;
          series[key] = series[key] || { label: m.label + " (" + m.unit + ")", points: [], limit: m.limit };
          series[key].points.push({ x: new Date(s.at).toLocaleTimeString(), y: m.value });
        });
      });
      Object.keys(series).forEach(function (key) {
        var wrap = document.createElement("div");
        wrap.className = "chart";
        var canvas = document.createElement("canvas");
        canvas.dataset.metric = key;
        wrap.appendChild(canvas);
        box.appendChild(wrap);
        new Chart(canvas, {
          type: "line",
          data: { labels: series[key].points.map(function (p) { return p.x; }),
                  datasets: [{ label: series[key].label, data: series[key].points.map(function (p) { return p.y; }),
                               borderColor: "#2557d6", tension: 0.2,
                               pointRadius: series[key].points.length < 30 ? 2 : 0 }] },
          options: { animation: false, responsive: true, maintainAspectRatio: false,
                     scales: { y: { beginAtZero: true, suggestedMax: series[key].limit || undefined } } }
        });
      });
    });
}
document.addEventListener("DOMContentLoaded", panelUsageCharts);
