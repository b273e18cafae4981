// The waiting page's poll loop (cnbi_spawner/waiting_page.py): ask the hub for this
// browser's place every poll_seconds (the hub says how often), show the position and the
// estimated wait, and reload the launch link once admitted (the reload starts the launch).
(function () {
  "use strict";
  var box = document.getElementById("cnbi-waiting");
  if (!box) {
    return;
  }
  var pollUrl = box.getAttribute("data-poll-url");
  var position = document.getElementById("cnbi-position");
  var wait = document.getElementById("cnbi-wait");

  function later(seconds) {
    window.setTimeout(poll, Math.max(0.5, Number(seconds) || 2) * 1000);
  }

  function poll() {
    window
      .fetch(pollUrl, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      })
      .then(function (response) {
        return response.json();
      })
      .then(function (status) {
        if (status.state !== "waiting") {
          window.location.reload(); // admitted, or the place is gone: the link decides
          return;
        }
        position.textContent = String(status.position);
        wait.textContent = status.wait;
        later(status.poll_seconds);
      })
      .catch(function () {
        later(5); // the hub is restarting or unreachable: keep trying, keep the place
      });
  }

  later(box.getAttribute("data-poll-seconds"));
})();
