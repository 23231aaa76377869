// The dashboard's charts (Chart.js), drawn from the figures the page carries as JSON.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("dashboard-data").textContent);
  const charts = data.charts;
  Chart.defaults.animation = false;  // drawn at once: what the screen shows is what was asked
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
  const blue = "#1f5fa8", green = "#2e7d32", orange = "#ef6c00", red = "#c62828";

  function draw(id, config) {
    return new Chart(document.getElementById(id), config);
  }

  draw("chart-trend", {
    type: "line",
    data: {
      labels: charts.trend.labels,
      datasets: [
        { label: "收件", data: charts.trend.received, borderColor: blue, backgroundColor: blue, tension: 0.2 },
        { label: "办结", data: charts.trend.concluded, borderColor: green, backgroundColor: green, tension: 0.2 },
      ],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  draw("chart-levels", {
    type: "bar",
    data: { labels: charts.levels.labels, datasets: [{ label: "办件量", data: charts.levels.values, backgroundColor: blue }] },
    options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  draw("chart-halls", {
    type: "bar",
    data: { labels: charts.halls.labels, datasets: [{ label: "办件量", data: charts.halls.values, backgroundColor: orange }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  draw("chart-rates", {
    type: "line",
    data: {
      labels: charts.rates.labels,
      datasets: [
        { label: "按期办结率", data: charts.rates.on_time, borderColor: green, backgroundColor: green },
        { label: "满意率", data: charts.rates.satisfaction, borderColor: blue, backgroundColor: blue },
      ],
    },
    options: { scales: { y: { min: 0, max: 100 } } },
  });
  draw("chart-cross", {
    type: "bar",
    data: { labels: charts.cross.labels, datasets: [{ label: "件", data: charts.cross.values, backgroundColor: [red, red, blue, blue, blue] }] },
    options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
  document.body.dataset.chartsReady = "yes";
})();
