// Progressive enhancement for the build pages: field hints on the form, live status.
(function () {
  "use strict";
  var form = document.getElementById("build-form");
  if (form) {
    var show = function () {
      var kind = (form.querySelector("input[name=kind]:checked") || {}).value || "";
      form.querySelectorAll(".cnbi-kind").forEach(function (el) {
        el.hidden = !el.classList.contains("cnbi-kind-" + kind);
      });
      var name = document.getElementById("displayName");
      if (name) { name.required = kind !== "manifest"; }
    };
    form.querySelectorAll("input[name=kind]").forEach(function (r) { r.addEventListener("change", show); });
    show();
    var pkgs = document.getElementById("packageVersions");
    var hint = function () {
      var lines = pkgs.value.split("\n").filter(function (l) { return l.trim() && l.trim()[0] !== "#"; });
      var spec = "\\s*(===|==|!=|<=|>=|~=|<|>)\\s*[A-Za-z0-9.*+!_-]+";
      var req = new RegExp("^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\\[[^\\]]*\\])?" +
        "(" + spec + "(\\s*," + spec + ")*)?\\s*(;.*)?$");
      var bad = lines.filter(function (l) { return !req.test(l.trim()); });
      pkgs.setCustomValidity(lines.length > 200 ? "At most 200 packages." :
        bad.length ? "Not a requirement: " + bad[0] : "");
    };
    if (pkgs) { pkgs.addEventListener("input", hint); }
  }
  var main = document.querySelector("[data-events-url]");
  if (!main || !window.EventSource) return;
  var source = new EventSource(main.dataset.eventsUrl);
  var text = function (id, value) { var el = document.getElementById(id); if (el) el.textContent = value; };
  source.addEventListener("build", function (ev) {
    var b = JSON.parse(ev.data);
    text("build-phase", b.phase);
    document.querySelectorAll(".cnbi-phases [data-phase]").forEach(function (li) {
      var on = li.dataset.phase === b.phase;
      li.className = "list-inline-item badge " + (on ? (b.phase === "Failure" ? "bg-danger" :
        b.phase === "Success" ? "bg-success" : "bg-primary") : "bg-light text-dark");
    });
    var msg = document.getElementById("build-message");
    msg.hidden = !b.message;
    msg.textContent = b.message || "";
    msg.className = "alert " + (b.phase === "Failure" ? "alert-danger" : "alert-secondary");
    var launch = document.getElementById("build-launch");
    if (b.launch_url) {
      document.getElementById("launch-link").href = b.launch_url;
      text("image-key", b.image);
      launch.hidden = false;
    }
    document.getElementById("build-waiting").hidden = !(b.phase === "Success" && !b.launchable);
    var list = document.getElementById("build-conditions");
    list.textContent = "";
    b.conditions.forEach(function (c) {
      var li = document.createElement("li");
      li.textContent = c.type + " " + c.status + " " + c.reason + ": " + c.message;
      list.appendChild(li);
    });
  });
  source.addEventListener("end", function () { source.close(); });
  source.addEventListener("gone", function () { source.close(); text("build-phase", "deleted"); });
})();
