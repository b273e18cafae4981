// Progressive enhancement only: a "Copy" button next to the launch link.
(function () {
  if (!navigator.clipboard) return;
  document.querySelectorAll(".cnbi-copy").forEach(function (button) {
    var target = document.getElementById(button.dataset.copyTarget);
    if (!target) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(target.value).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      });
    });
  });
})();
