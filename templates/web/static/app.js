// Live regions: an element with data-live="URL" is re-fetched from URL (a page fragment the
// server renders) after each "change" event on /events. A region holding a form the admin is
// editing is not replaced under their fingers: a notice offers a reload instead.
"use strict";

// Table filter: an input with data-filter="SELECTOR" hides the rows matching SELECTOR whose
// text does not contain every word typed. Re-applied after each live refresh.
function applyFilters() {
  for (const f of document.querySelectorAll("input[data-filter]")) {
    const words = f.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of document.querySelectorAll(f.dataset.filter)) {
      const text = row.textContent.toLowerCase();
      row.hidden = !words.every(function (w) { return text.includes(w); });
    }
  }
}
document.addEventListener("input", function (ev) {
  if (ev.target.matches("input[data-filter]")) { applyFilters(); }
});

(function () {
  const regions = Array.from(document.querySelectorAll("[data-live]"));
  const dot = document.getElementById("live-dot");
  if (regions.length === 0 || !window.EventSource) {
    if (dot) { dot.hidden = true; } // nothing on this page updates live
    return;
  }

  // The page a region belongs to (after a POST the address bar may show the form's action).
  function pageOf(el) { return el.dataset.live.split("?")[0]; }

  function editing(el) {
    // A form shown with its errors stays until the admin acts on it.
    if (el.querySelector("[aria-invalid=true]")) { return true; }
    if (el.contains(document.activeElement) && document.activeElement.matches("input,select,textarea")) { return true; }
    for (const f of el.querySelectorAll("input[type=text],textarea")) {
      if (f.value !== f.defaultValue) { return true; }
    }
    for (const s of el.querySelectorAll("select")) {
      for (const o of s.options) { if (o.selected !== o.defaultSelected) { return true; } }
    }
    return false;
  }

  function notice(el) {
    if (el.previousElementSibling && el.previousElementSibling.classList.contains("stale")) { return; }
    const n = document.createElement("div");
    n.className = "flash stale";
    n.textContent = "New information is available. ";
    const a = document.createElement("a");
    a.href = pageOf(el);
    a.textContent = "Reload (your unsaved input here is lost)";
    n.appendChild(a);
    el.parentNode.insertBefore(n, el);
  }

  let pending = null;
  function refresh() {
    pending = null;
    for (const el of regions) {
      if (editing(el)) { notice(el); continue; }
      fetch(el.dataset.live, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(pageOf(el)); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) { if (html !== null && !editing(el)) { el.innerHTML = html; applyFilters(); el.dataset.version = String(Number(el.dataset.version || 0) + 1); } })
        .catch(function () { /* the next event retries */ });
    }
  }

  // One stream per visible tab: browsers allow about six HTTP/1.1 connections per host, and
  // a stream held by each background tab would starve the UI's own requests.
  let es = null;
  let lost = false;
  function connect() {
    es = new EventSource("/events");
    es.addEventListener("open", function () {
      if (dot) { dot.classList.add("on"); dot.title = "live updates: on"; }
      if (lost) { lost = false; refresh(); } // events may have been missed while away
    });
    es.addEventListener("error", function () {
      lost = true;
      if (dot) { dot.classList.remove("on"); dot.title = "live updates: reconnecting"; }
      // The browser gives up on a refused stream (e.g. the session expired): a fetch of the
      // region tells, and sends the admin to the login page if so.
      if (es.readyState === EventSource.CLOSED) { refresh(); }
    });
    es.addEventListener("change", function () {
      // Coalesce bursts (a boot records several stages in a second) into one fetch.
      if (pending === null) { pending = setTimeout(refresh, 150); }
    });
  }
  function disconnect() {
    if (es !== null) { es.close(); es = null; lost = true; }
    if (dot) { dot.classList.remove("on"); dot.title = "live updates: paused (tab hidden)"; }
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { disconnect(); } else if (es === null) { connect(); }
  });
  window.addEventListener("pagehide", disconnect);
  if (!document.hidden) { connect(); }
})();
