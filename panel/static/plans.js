// Plans page: the term switch shows each plan's (and add-on's) price for the chosen term and
// points "Choose" at the order form with that term. Order form: add-ons not sold on the chosen
// term are disabled, and the total follows the choices. Without JavaScript every term's price is
// listed and the server checks the order the same way.
(function () {
  function show(root, term) {
    root.querySelectorAll(".term-price").forEach(function (el) { el.hidden = el.dataset.term !== term; });
  }

  function formatMinor(amount, currency, exponent) {
    var value = amount / Math.pow(10, exponent);
    try {
      return new Intl.NumberFormat(document.documentElement.lang || undefined,
        { style: "currency", currency: currency.toUpperCase(), minimumFractionDigits: exponent,
          maximumFractionDigits: exponent }).format(value);
    } catch (e) { return value.toFixed(exponent) + " " + currency.toUpperCase(); }
  }

  var sw = document.getElementById("term-switch");
  if (sw) {
    var buttons = sw.querySelectorAll("button[data-term]");
    var apply = function (term) {
      buttons.forEach(function (b) { b.setAttribute("aria-checked", b.dataset.term === term ? "true" : "false"); });
      document.querySelectorAll(".card.plan").forEach(function (card) {
        var terms = (card.dataset.terms || "").split(" ").filter(Boolean);
        var has = terms.indexOf(term) >= 0;
        show(card, has ? term : terms[0]);
        var missing = card.querySelector(".term-missing");
        if (missing) missing.hidden = has || !terms.length;
        card.querySelectorAll(".addon-list li").forEach(function (li) {
          var at = (li.dataset.terms || "").split(" ");
          li.hidden = terms.length > 0 && at.indexOf(has ? term : terms[0]) < 0;
        });
        var link = card.querySelector("a[data-order-link]");
        if (link) {
          var url = new URL(link.href, window.location.href);
          if (has) url.searchParams.set("term", term); else url.searchParams.delete("term");
          link.href = url.pathname + url.search;
        }
      });
      sw.dataset.current = term;
    };
    buttons.forEach(function (b) { b.addEventListener("click", function () { apply(b.dataset.term); }); });
    document.documentElement.classList.add("terms-switched");  // the switch names the term
    apply(sw.dataset.default || (buttons[0] && buttons[0].dataset.term));
  }

  var form = document.getElementById("order-form");
  if (form) {
    var total = document.getElementById("order-total");
    var update = function () {
      var picked = form.querySelector("input[name=term]:checked");
      var term = picked ? picked.value : "";
      var amount = picked ? parseInt(picked.dataset.amount, 10) : 0;
      form.querySelectorAll("label[data-addon]").forEach(function (label) {
        var box = label.querySelector("input[type=checkbox]");
        var terms = (label.dataset.terms || "").split(" ");
        var ok = !term || terms.indexOf(term) >= 0;
        box.disabled = !ok;
        if (!ok) box.checked = false;
        label.classList.toggle("unavailable", !ok);
        var note = label.querySelector(".term-missing");
        if (note) note.hidden = ok;
        show(label, term);
        var extra = box.getAttribute("data-amount-" + term);
        if (box.checked && extra) amount += parseInt(extra, 10);
      });
      if (total && picked && form.dataset.currency) {
        total.textContent = formatMinor(amount, form.dataset.currency, parseInt(total.dataset.exponent || "2", 10)) +
          " / " + picked.dataset.every;
      }
    };
    form.addEventListener("change", update);
    update();
  }
})();
