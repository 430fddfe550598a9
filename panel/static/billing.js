// Confirmation before a destructive form is sent: <form data-confirm="Terminate service 12?">.
// (No inline handlers: the panel's CSP is script-src 'self'.)
(function () {
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form && form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  }, true);
})();
