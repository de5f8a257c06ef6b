// Draws every element that carries a figure in its data-figure attribute. The figure travels in an
// attribute rather than an inline script so that the pages can forbid inline scripts altogether.
(function () {
  "use strict";
  document.querySelectorAll("[data-figure]").forEach(function (el) {
    var fig = JSON.parse(el.getAttribute("data-figure"));
    Plotly.newPlot(el, fig.data, fig.layout, {displayModeBar: false, responsive: true});
    // A point whose customdata is a local path opens that page (e.g. a bar opens its mismatch list).
    el.on("plotly_click", function (ev) {
      var target = ev.points.length ? ev.points[0].customdata : null;
      if (typeof target === "string" && target.charAt(0) === "/" && target.charAt(1) !== "/") {
        window.location.href = target;
      }
    });
  });
})();
