// Auto-refresh: reload the page every data-refresh-seconds while the box is ticked.
// The choice is remembered in this browser; nothing refreshes while you type in a field,
// while instances are ticked for a bulk action, or while a row is expanded.
(function () {
  "use strict";
  var KEY = "duratask.autoRefresh";
  var box = document.getElementById("auto-refresh");
  var seconds = Number(document.body.getAttribute("data-refresh-seconds") || 0);
  if (!box || !(seconds > 0)) {
    return;
  }
  var timer = null;
  try {
    box.checked = window.localStorage.getItem(KEY) !== "off";
  } catch (e) {
    box.checked = true;
  }
  function busy() {
    if (document.querySelector("#bulk-form input[name=id]:checked, details[open]")) {
      return true;
    }
    var active = document.activeElement;
    if (!active || active === box) {
      return false;
    }
    return ["INPUT", "TEXTAREA", "SELECT"].indexOf(active.tagName) >= 0;
  }
  function schedule() {
    window.clearTimeout(timer);
    if (box.checked) {
      timer = window.setTimeout(tick, seconds * 1000);
    }
  }
  function tick() {
    if (document.hidden || busy()) {
      schedule();
      return;
    }
    window.location.reload();
  }
  box.addEventListener("change", function () {
    try {
      window.localStorage.setItem(KEY, box.checked ? "on" : "off");
    } catch (e) {
      // storage may be unavailable (private mode); the box still works for this page
    }
    schedule();
  });
  document.addEventListener("visibilitychange", schedule);
  schedule();
})();
