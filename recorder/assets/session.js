// Starts asciinema-player on the session page. Everything it needs comes
// from the player element's data attributes (HTML-escaped by the server),
// so no recording data is ever written into a script.
(function () {
  "use strict";
  var el = document.getElementById("player");
  if (!el || typeof AsciinemaPlayer === "undefined") {
    return;
  }
  var d = el.dataset;
  var opts = { autoPlay: true, preload: true, fit: "width" };
  if (d.cols && d.rows) {
    opts.cols = Number(d.cols);
    opts.rows = Number(d.rows);
  }
  var src;
  if (d.live === "true") {
    // bufferTime 0: show output as it arrives instead of delaying it to smooth jitter.
    src = { driver: "eventsource", url: d.events, bufferTime: 0 };
  } else {
    src = d.src;
  }
  AsciinemaPlayer.create(src, el, opts);
})();
