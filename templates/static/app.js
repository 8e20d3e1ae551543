// Live parts of pages: an element with data-live="<url>" is refreshed from
// that URL (server-rendered, escaped HTML) until the fragment marks itself
// final with data-final. With data-events="<url>" (a stream of server-sent
// events) it is refreshed when the stream says something changed, and
// polled every second only while the stream is not open (no EventSource,
// or the connection dropped: the browser reconnects by itself).
(function () {
  "use strict";
  function watch(el) {
    var url = el.getAttribute("data-live");
    var events = el.getAttribute("data-events");
    var timer = null, busy = false, again = false, streaming = false, source = null;
    function isFinal() { return !!el.querySelector("[data-final]"); }
    function schedule(ms) { clearTimeout(timer); timer = setTimeout(refresh, ms); }
    function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { el.innerHTML = html; } },
              function () { /* tried again below */ })
        .then(function () {
          busy = false;
          if (isFinal()) {
            clearTimeout(timer);
            if (source) { source.close(); }
            return;
          }
          if (again) { again = false; refresh(); return; }
          // The stream says when to look; the timer is the safety net.
          schedule(streaming ? 15000 : 1000);
        });
    }
    if (isFinal()) { return; }
    if (events && window.EventSource) {
      source = new EventSource(events);
      source.onopen = function () { streaming = true; };
      source.onerror = function () { streaming = false; schedule(1000); };
      ["run", "target", "end"].forEach(function (name) {
        source.addEventListener(name, refresh);
      });
      source.addEventListener("end", function () { source.close(); streaming = false; });
    }
    schedule(1000);
  }
  document.querySelectorAll("[data-live]").forEach(watch);
})();
