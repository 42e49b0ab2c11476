/* retain: draw the charts a page describes in <script id="retain-charts"> with Chart.js.
 * Each <canvas data-chart="ID"> gets the spec charts[ID]; see retain/service/charts.py.
 * A dataset may ask for dashed: true, showLine: false (points only) and its pointRadius.
 * xType: "time" takes {x: milliseconds since 1970 UTC, y} points and draws them on a
 * linear axis labelled with dates (no date adapter needed). xType: "linear" takes {x, y}
 * points on a numeric x axis (xMin, xMax, xFormat). */
(function () {
  "use strict";
  var PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899",
    "#84cc16", "#0ea5e9", "#f97316", "#14b8a6", "#a855f7"];

  function fmt(format, v) {
    if (v === null || v === undefined || isNaN(v)) return "–";
    if (format === "percent") return v.toFixed(1) + "%";
    if (format === "probability") return v.toFixed(2);
    if (format === "count") return Math.round(v).toLocaleString("en-US");
    if (format === "money") return v.toLocaleString("en-US", {maximumFractionDigits: Math.abs(v) < 100 ? 2 : 0});
    return v.toLocaleString("en-US", {maximumFractionDigits: 3});
  }

  function axis(title, stacked, format, isValue) {
    var a = {title: {display: !!title, text: title || ""}, stacked: !!stacked};
    if (isValue) a.ticks = {callback: function (v) { return fmt(format, v); }};
    return a;
  }

  var DAY_MS = 86400000;

  function isoDay(ms) { return new Date(ms).toISOString().slice(0, 10); }

  function timeAxis(spec) {
    var xs = [];
    spec.datasets.forEach(function (d) { d.data.forEach(function (p) { xs.push(p.x); }); });
    var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
    var pad = Math.max(DAY_MS, (hi - lo) * 0.02);
    return {type: "linear", min: lo - pad, max: hi + pad, offset: false,
      title: {display: !!spec.x, text: spec.x || ""},
      ticks: {maxTicksLimit: 8, callback: function (v) { return isoDay(v); }}};
  }

  function linearAxis(spec) {
    return {type: "linear", min: spec.xMin, max: spec.xMax,
      title: {display: !!spec.x, text: spec.x || ""},
      ticks: {maxTicksLimit: 8, callback: function (v) { return fmt(spec.xFormat, v); }}};
  }

  function xy(spec) {
    var many = spec.datasets.length > 1;
    var linear = spec.xType === "linear";
    var time = spec.xType === "time" || linear;
    var datasets = spec.datasets.map(function (d, i) {
      var colour = spec.colors ? spec.colors : PALETTE[i % PALETTE.length];
      var line = spec.type === "line";
      return {label: d.label, data: d.data, backgroundColor: colour, borderColor: colour,
        borderWidth: line ? 2 : 0,
        pointRadius: d.pointRadius !== undefined ? d.pointRadius : (line ? 1.5 : 0),
        showLine: d.showLine !== false, borderDash: d.dashed ? [6, 4] : [],
        maxBarThickness: 48, barThickness: time ? 6 : undefined, minBarLength: time ? 2 : 0,
        spanGaps: false, tension: 0.15};
    });
    var config = {
      type: spec.type,
      data: time ? {datasets: datasets} : {labels: spec.labels, datasets: datasets},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: {mode: "index", intersect: false},
        plugins: {
          legend: {display: many, position: "bottom"},
          tooltip: {
            filter: function (item) { return item.parsed.y !== null && !isNaN(item.parsed.y); },
            callbacks: {label: function (c) { return c.dataset.label + ": " + fmt(spec.format, c.parsed.y); }}
          }
        },
        scales: {x: linear ? linearAxis(spec) : time ? timeAxis(spec) : axis(spec.x, spec.stacked, null, false),
          y: axis(spec.y, spec.stacked, spec.format, true)}
      }
    };
    if (time) {
      config.options.interaction = {mode: "nearest", intersect: false, axis: "x"};
      config.options.plugins.tooltip.callbacks.title = function (items) {
        if (!items.length) return "";
        return linear ? fmt(spec.xFormat, items[0].parsed.x) : isoDay(items[0].parsed.x);
      };
    }
    return config;
  }

  function heat(spec) {
    var points = [], max = 0, min = Infinity;
    spec.values.forEach(function (row, i) {
      row.forEach(function (v, j) {
        if (v === null || v === undefined) return;
        points.push({x: spec.xLabels[j], y: spec.yLabels[i], v: v,
          label: spec.cellLabels ? spec.cellLabels[i][j] : ""});
        if (spec.skipFirst && j === 0) return;
        max = Math.max(max, v); min = Math.min(min, v);
      });
    });
    if (!isFinite(min)) min = 0;
    var nx = spec.xLabels.length, ny = spec.yLabels.length;
    function shade(v) {
      var t = max > min ? Math.min(1, Math.max(0, (v - min) / (max - min))) : 1;
      var light = 96 - t * 58;
      return "hsl(221, 83%, " + light + "%)";
    }
    var cellText = {
      id: "cellText",
      afterDatasetsDraw: function (chart) {
        var meta = chart.getDatasetMeta(0), ctx = chart.ctx;
        ctx.save();
        ctx.textAlign = "center"; ctx.textBaseline = "middle";
        meta.data.forEach(function (el, k) {
          var p = points[k], props = el.getProps(["x", "y", "width", "height"], true);
          var text = fmt(spec.format, p.v);
          ctx.font = "11px system-ui, sans-serif";
          if (ctx.measureText(text).width > props.width - 2 || props.height < 11) return;
          var t = max > min ? (p.v - min) / (max - min) : 1;
          ctx.fillStyle = t > 0.55 ? "#fff" : "#1f2937";
          ctx.fillText(text, props.x + props.width / 2, props.y + props.height / 2);
        });
        ctx.restore();
      }
    };
    return {
      type: "matrix",
      data: {datasets: [{
        label: spec.title, data: points,
        backgroundColor: function (c) { var p = c.dataset.data[c.dataIndex]; return p ? shade(p.v) : "#fff"; },
        borderColor: "#fff", borderWidth: 1,
        width: function (c) { var a = c.chart.chartArea; return a ? a.width / nx - 1 : 10; },
        height: function (c) { var a = c.chart.chartArea; return a ? a.height / ny - 1 : 10; }
      }]},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        plugins: {
          legend: {display: false},
          tooltip: {callbacks: {
            title: function () { return ""; },
            label: function (c) {
              var p = c.raw;
              return p.y + ", " + p.x + ": " + fmt(spec.format, p.v) + (p.label ? " (" + p.label + ")" : "");
            }
          }}
        },
        scales: {
          x: {type: "category", labels: spec.xLabels, offset: true, grid: {display: false},
            title: {display: !!spec.x, text: spec.x || ""}},
          y: {type: "category", labels: spec.yLabels, offset: true, grid: {display: false}, reverse: false,
            title: {display: !!spec.y, text: spec.y || ""}}
        }
      },
      plugins: [cellText]
    };
  }

  function treemap(spec) {
    var top = Math.max.apply(null, spec.items.map(function (i) { return i.share; }).concat([0.0001]));
    return {
      type: "treemap",
      data: {datasets: [{
        label: spec.title, tree: spec.items, key: "value",
        borderColor: "#fff", borderWidth: 2, spacing: 0,
        backgroundColor: function (c) {
          if (c.type !== "data") return "transparent";
          var item = c.raw._data;
          return "hsl(221, 70%, " + (85 - 50 * (item.share / top)) + "%)";
        },
        labels: {
          display: true, align: "left", position: "top", overflow: "fit",
          color: function (c) { return c.raw && c.raw._data.share / top > 0.5 ? "#fff" : "#111827"; },
          font: [{size: 13, weight: "bold"}, {size: 11}],
          formatter: function (c) { return [c.raw._data.label, c.raw._data.short]; }
        }
      }]},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        plugins: {
          legend: {display: false},
          tooltip: {callbacks: {
            title: function (items) { return items[0].raw._data.label; },
            label: function (c) { return c.raw._data.detail; }
          }}
        }
      }
    };
  }

  function draw(canvas, spec) {
    var config = spec.type === "heatmap" ? heat(spec) : spec.type === "treemap" ? treemap(spec) : xy(spec);
    var chart = new window.Chart(canvas, config);
    canvas.dataset.rendered = "true";
    return chart;
  }

  var drawn = {};  // the charts by id, for a page that redraws one

  function start() {
    var source = document.getElementById("retain-charts");
    if (!source || !window.Chart) return;
    var specs = JSON.parse(source.textContent || "{}");
    window.Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
    var canvases = document.querySelectorAll("canvas[data-chart]");
    for (var i = 0; i < canvases.length; i++) {
      var spec = specs[canvases[i].dataset.chart];
      if (!spec) continue;
      try { drawn[canvases[i].dataset.chart] = draw(canvases[i], spec); } catch (err) {
        canvases[i].dataset.error = String(err);
        if (window.console) window.console.error("retain chart", canvases[i].dataset.chart, err);
      }
    }
    whatif();
  }

  // the what-if page: each move of a lever asks /api/whatif and redraws what it shows
  function whatif() {
    var form = document.getElementById("whatif-form");
    if (!form || !window.fetch) return;
    var asked = 0, timer = null;
    function number(v) { return v === null ? "–" : v.toLocaleString(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2}); }
    function show(answer) {
      var chart = drawn["whatif-revenue"];
      if (chart) {
        var series = answer.base.revenue === null ? "purchases" : "revenue";
        chart.data.labels = answer.base.month_ends;
        chart.data.datasets[0].data = answer.base[series];
        chart.data.datasets[1].data = answer.scenario[series];
        chart.update("none");
      }
      var active = drawn["whatif-active"];
      if (active) {
        active.data.labels = answer.base.month_ends;
        active.data.datasets[0].data = answer.base.active;
        active.data.datasets[1].data = answer.scenario.active;
        active.update("none");
      }
      var box = document.getElementById("whatif-campaign");
      if (box) {
        var c = answer.campaign;
        box.hidden = !c;
        if (c) {
          var fields = box.querySelectorAll("[data-field]");
          for (var f = 0; f < fields.length; f++) {
            var name = fields[f].dataset.field, v = c[name];
            if (name === "verdict") fields[f].textContent = c.pays ? "it pays" : "it does not pay";
            else if (name === "customers_reached") fields[f].textContent = Math.round(v).toLocaleString();
            else fields[f].textContent = number(v === undefined ? null : v);
          }
        }
      }
      var rows = document.querySelectorAll("#whatif-totals tr[data-total]");
      for (var i = 0; i < rows.length; i++) {
        var key = rows[i].dataset.total, change = answer.change[key];
        var shown = key === "active_at_end" ? function (v) { return Math.round(v).toLocaleString(); } : number;
        rows[i].querySelector("[data-side=base]").textContent = shown(answer.base[key]);
        rows[i].querySelector("[data-side=scenario]").textContent = shown(answer.scenario[key]);
        rows[i].querySelector("[data-side=change]").textContent =
          !change || change.relative === null ? "–" : (change.relative >= 0 ? "+" : "") + (100 * change.relative).toFixed(1) + "%";
      }
      var months = document.querySelector("#whatif-totals [data-field=months]");
      if (months) months.textContent = String(answer.base.month_ends.length);
    }
    function ask() {
      var mine = ++asked;
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, name) { if (String(value).trim() !== "") params.append(name, value); });
      var query = params.toString();
      window.history.replaceState(null, "", "/whatif?" + query);
      var error = document.getElementById("whatif-error");
      fetch(form.dataset.api + "?" + query, {credentials: "same-origin"})
        .then(function (r) {
          if (r.ok) return r.json();
          // the API's own words: {"detail": "..."} or FastAPI's list of field errors
          return r.json().catch(function () { return {}; }).then(function (body) {
            var detail = body && body.detail;
            if (Array.isArray(detail)) detail = detail.map(function (d) { return typeof d === "string" ? d : d.msg; }).join("; ");
            return Promise.reject(new Error(detail || "the projection failed (" + r.status + ")"));
          });
        })
        .then(function (answer) {
          if (mine !== asked) return;  // a later move has asked since
          show(answer);
          document.getElementById("whatif").classList.remove("stale");
          if (error) { error.hidden = true; error.textContent = ""; }
          delete form.dataset.error;
          form.dataset.shown = String(mine);
        })
        .catch(function (err) {
          if (mine !== asked) return;
          form.dataset.error = err.message;
          if (error) { error.textContent = err.message; error.hidden = false; }
          // what is drawn is the last answer's, not this move's: shown faded
          document.getElementById("whatif").classList.add("stale");
        });
    }
    function moved(event) {
      var input = event.target;
      var out = form.querySelector("output[data-lever=" + input.name + "]");
      if (out) out.textContent = (input.value >= 0 ? "+" : "") + Math.round(100 * input.value) + "%";
      window.clearTimeout(timer);
      timer = window.setTimeout(ask, 60);
    }
    form.addEventListener("input", moved);
    form.addEventListener("change", moved);
    form.addEventListener("submit", function (event) { event.preventDefault(); ask(); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
