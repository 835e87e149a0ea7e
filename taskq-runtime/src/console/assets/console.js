// taskq console: live refresh that pauses while a person reads. Vendored with the crate,
// served from the binary; no dependency. Every few seconds (the body's data-refresh, in
// seconds; 0 = off) it fetches the page again and swaps its #content, unless the person
// is reading: the pointer is over a table, the arguments, the chart or a form; text is selected;
// a form field has the focus; a row is ticked; the page is scrolled down or hidden; or
// the person paused it with the #refresh-toggle button.
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.getAttribute("data-refresh") || "0", 10);
  var status = document.getElementById("refresh-status");
  var toggle = document.getElementById("refresh-toggle");
  if (!every || !status) { return; }
  var hovering = false;
  var pausedByHand = false;

  document.addEventListener("mouseover", function (e) {
    hovering = !!(e.target.closest && e.target.closest("table, pre, svg, form, .reading"));
  });
  // The pointer left the window: nobody is reading over a table any more.
  document.addEventListener("mouseout", function (e) { if (!e.relatedTarget) { hovering = false; } });

  function reading() {
    if (pausedByHand) { return "paused"; }
    if (document.hidden) { return "paused (page hidden)"; }
    if (hovering) { return "paused while you read"; }
    var sel = window.getSelection && window.getSelection();
    if (sel && sel.toString().length > 0) { return "paused (text selected)"; }
    var a = document.activeElement;
    if (a && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName)) { return "paused (form in use)"; }
    if (document.querySelector("#content input[type=checkbox]:checked")) {
      return "paused (rows ticked)";
    }
    if (window.scrollY > 0) { return "paused (scrolled)"; }
    return "";
  }

  function show(why) {
    status.textContent = why || ("live, every " + every + " s");
    status.className = why ? "paused" : "live";
  }

  function refresh() {
    var why = reading();
    show(why);
    if (why) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Taskq-Refresh": "1" } })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (!html || reading()) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("content");
        var old = document.getElementById("content");
        if (fresh && old) { old.replaceWith(document.importNode(fresh, true)); }
      })
      .catch(function () { show("offline, retrying"); });
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      pausedByHand = !pausedByHand;
      toggle.textContent = pausedByHand ? "Resume live refresh" : "Pause live refresh";
      show(reading());
    });
  }
  show(reading());
  window.setInterval(refresh, every * 1000);
})();
