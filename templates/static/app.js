// Live parts of pages: an element with data-live="<url>" is refreshed from
// that URL (server-rendered, escaped HTML) every second until the fragment
// marks itself final with data-final.
(function () {
  "use strict";
  function watch(el) {
    var url = el.getAttribute("data-live");
    var tick = function () {
      fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null) { el.innerHTML = html; }
          if (!el.querySelector("[data-final]")) { setTimeout(tick, 1000); }
        })
        .catch(function () { setTimeout(tick, 3000); });
    };
    if (!el.querySelector("[data-final]")) { setTimeout(tick, 1000); }
  }
  document.querySelectorAll("[data-live]").forEach(watch);
})();
