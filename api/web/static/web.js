// The workspace's only script: a live progress bar while a campaign builds.
// Without it the page still refreshes itself (a <noscript> meta refresh) and shows the same.
(function () {
  "use strict";
  var box = document.getElementById("build");
  if (!box || box.dataset.status !== "building") return;
  var bar = document.getElementById("build-progress");
  var pct = document.getElementById("build-percent");
  var status = document.getElementById("build-status");
  var counts = document.getElementById("build-counts");
  var words = {};
  var tpl = document.getElementById("status-words");
  if (tpl) {
    tpl.content.querySelectorAll("[data-status]").forEach(function (el) {
      words[el.dataset.status] = el.textContent;
    });
  }
  var countsTpl = document.getElementById("counts-word");
  var countsText = countsTpl ? countsTpl.content.textContent : "";
  function fmt(n) { return Number(n).toLocaleString(); }
  function tick() {
    fetch(box.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (p) {
        bar.value = p.percent;
        bar.textContent = p.percent + "%";
        pct.textContent = p.percent + "%";
        status.textContent = words[p.status] || p.status;
        if (countsText) {
          counts.textContent = countsText.replace("{done}", fmt(p.done))
            .replace("{total}", fmt(p.total)).replace("{failed}", fmt(p.failed));
        }
        if (p.status === "building") {
          setTimeout(tick, 1000);
        } else {
          box.dataset.status = p.status;
          // the build is over: load the page again to show the figures
          setTimeout(function () { window.location.reload(); }, 600);
        }
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  setTimeout(tick, 500);
})();
