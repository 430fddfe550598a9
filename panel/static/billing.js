// Service page, billing block (loaded with <script src defer>: the CSP is script-src 'self').
// * Back from Stripe Checkout ([data-await-stripe]): re-read the page every 2 s; once Stripe has
//   confirmed the payment, load the page afresh (the status poller then follows the service).
// * While an add-on is being added or removed: re-read every 2 s and swap in the fresh billing
//   block; once it is done, the whole page (limits and usage change with it), without a reload.
(function () {
  var tries = 0;
  function fetchPage(then) {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { then(html ? new DOMParser().parseFromString(html, "text/html") : null); })
      .catch(function () { then(null); });
  }
  function awaitStripe() {
    if (tries++ > 150) return;
    fetchPage(function (fresh) {
      if (fresh && !fresh.querySelector("[data-await-stripe]")) {
        window.location.replace(window.location.pathname);
        return;
      }
      setTimeout(awaitStripe, 2000);
    });
  }
  function pendingAddons(root) {
    return root && root.querySelector("[data-state=adding], [data-state=removing]");
  }
  function followAddons() {
    if (!pendingAddons(document.getElementById("billing-info")) || tries++ > 150) return;
    fetchPage(function (fresh) {
      var next = fresh && fresh.getElementById("billing-info");
      var current = document.getElementById("billing-info");
      if (next && current && pendingAddons(next)) {
        current.replaceWith(next);
      } else if (fresh && fresh.querySelector("main")) {  // settled: the limits and usage changed too
        document.querySelector("main").innerHTML = fresh.querySelector("main").innerHTML;
        if (window.panelLocalTimes) window.panelLocalTimes();
        if (window.panelUsageCharts) window.panelUsageCharts();
        return;
      }
      setTimeout(followAddons, 2000);
    });
  }
  if (document.querySelector("[data-await-stripe]")) setTimeout(awaitStripe, 2000);
  else if (pendingAddons(document.getElementById("billing-info"))) setTimeout(followAddons, 2000);
})();
