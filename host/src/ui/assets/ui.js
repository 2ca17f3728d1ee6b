// The Sluice UI: a job list at /, a job page at /jobs/NAME?tenant=TENANT, both drawn from
// the JSON API (/v1/overview, /v1/jobs/NAME/overview, /v1/jobs/NAME/batches?last=1000, each
// with ?tenant=TENANT) every second.
// Tenant text (names, failures, manifests) only ever enters the page as text nodes.
'use strict';

const POLL_MS = 1000;
const main = document.getElementById('main');

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  }
  return node;
}

function ms(us) { return us == null ? '' : (us / 1000).toFixed(us < 10000 ? 2 : 0) + ' ms'; }
function rate(value) { return value == null ? '' : value.toFixed(1) + ' /s'; }
function seconds(value) { return value.toFixed(3) + ' s'; }
function bytes(value) {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return value.toFixed(unit ? 1 : 0) + ' ' + units[unit];
}

async function json(path) {
  const answer = await fetch(path, {credentials: 'same-origin'});
  if (answer.status === 401) { location.href = '/login'; throw new Error('not logged in'); }
  if (!answer.ok) throw new Error(path + ': ' + answer.status);
  return answer.json();
}

function table(headers, rows) {
  const head = el('tr', {}, ...headers.map(([name, cls]) => el('th', cls ? {class: cls} : {}, name)));
  return el('table', {}, el('thead', {}, head), el('tbody', {}, ...rows));
}

// A job's page and JSON routes, qualified by its tenant (the admin sees every tenant's).
function jobPath(job, tenant) { return encodeURIComponent(job) + '?tenant=' + encodeURIComponent(tenant); }

// The job list.
async function drawList() {
  const {jobs} = await json('/v1/overview');
  const rows = jobs.map(job => el('tr', {},
    el('td', {}, el('a', {href: '/jobs/' + jobPath(job.job, job.tenant)}, job.job)),
    el('td', {}, job.tenant),
    el('td', {class: 'state-' + job.state}, job.state),
    el('td', {class: 'num'}, job.interval_ms + ' ms'),
    el('td', {class: 'num'}, job.batches),
    el('td', {class: 'num'}, rate(job.input_rate)),
    el('td', {class: 'num'}, ms(job.scheduling_p50_us)),
    el('td', {class: 'num'}, ms(job.processing_p50_us)),
    el('td', {class: 'failure'}, job.failure ? job.failure.reason : '')));
  main.replaceChildren(el('h1', {}, 'Jobs'), table([
    ['Job'], ['Tenant'], ['State'], ['Interval', 'num'], ['Batches', 'num'], ['Input rate', 'num'],
    ['Scheduling delay p50', 'num'], ['Processing p50', 'num'], ['Last failure'],
  ], rows));
  main.dataset.jobs = jobs.length;
}

// A job page, like Spark's Streaming tab: timelines and histograms of the last batches.
const CHARTS = [
  ['input-rate', 'Input rate (records/s)', (b, job) => b.records_in / (job.interval_ms / 1000)],
  ['scheduling-delay', 'Scheduling delay (ms)', b => b.scheduling_us / 1000],
  ['processing-time', 'Processing time (ms)', b => b.processing_us / 1000],
  ['total-delay', 'Total delay (ms)', b => (b.scheduling_us + b.processing_us) / 1000],
];
const HISTOGRAM_BINS = 20;

function histogram(values) {
  const max = Math.max(...values, 0);
  const width = max > 0 ? max / HISTOGRAM_BINS : 1;
  const xs = [], ys = [];
  for (let bin = 0; bin < HISTOGRAM_BINS; bin++) { xs.push((bin + 0.5) * width); ys.push(0); }
  for (const value of values) ys[Math.min(HISTOGRAM_BINS - 1, Math.floor(value / width))]++;
  return [xs, ys];
}

const plots = {};

function chart(id, title, data, options) {
  let holder = document.getElementById(id);
  if (!holder) return;
  const width = Math.max(320, holder.clientWidth || 420);
  if (!plots[id]) {
    plots[id] = new uPlot(Object.assign({width, height: 180, legend: {show: false}}, options), data, holder.querySelector('.plot'));
  } else {
    plots[id].setData(data);
  }
}

function drawCharts(job, batches) {
  const xs = batches.map(b => b.time_ms / 1000);
  for (const [id, title, value] of CHARTS) {
    const ys = batches.map(b => value(b, job));
    chart(id, title, [xs, ys], {
      scales: {x: {time: true}},
      series: [{}, {label: title, stroke: '#1d3557', width: 1, points: {show: batches.length < 60}}],
    });
    document.getElementById(id).dataset.points = ys.length;
    chart(id + '-histogram', title, histogram(ys), {
      scales: {x: {time: false}},
      series: [{}, {label: 'batches', fill: '#a8dadc', stroke: '#457b9d', paths: uPlot.paths.bars({size: [0.9, 60]})}],
    });
    document.getElementById(id + '-histogram').dataset.points = ys.length;
  }
}

function jobSkeleton() {
  const charts = el('div', {class: 'charts'});
  for (const [id, title] of CHARTS) {
    charts.append(el('div', {class: 'chart', id}, el('h3', {}, title + ', last batches'), el('div', {class: 'plot'})));
    charts.append(el('div', {class: 'chart', id: id + '-histogram'}, el('h3', {}, title + ', histogram'), el('div', {class: 'plot'})));
  }
  main.replaceChildren(
    el('h1', {id: 'job-name'}),
    el('p', {class: 'summary', id: 'summary'}),
    charts,
    el('h2', {}, 'Steps'), el('div', {id: 'steps'}),
    el('h2', {}, 'Sources'), el('div', {id: 'sources'}),
    el('h2', {}, 'Checkpoints'), el('p', {id: 'checkpoints'}),
    el('h2', {}, 'Last failure'), el('div', {id: 'failure'}),
    el('h2', {}, 'UDF components'), el('div', {id: 'udfs'}),
    el('h2', {}, 'Manifest'), el('pre', {id: 'manifest'}));
}

async function drawJob(name, tenant) {
  const path = '/v1/jobs/' + encodeURIComponent(name);
  const of = tenant == null ? '' : 'tenant=' + encodeURIComponent(tenant);
  const [job, {batches}] = await Promise.all([
    json(path + '/overview' + (of ? '?' + of : '')), json(path + '/batches?last=1000' + (of ? '&' + of : ''))]);
  if (!document.getElementById('job-name')) jobSkeleton();
  document.getElementById('job-name').textContent = job.job;
  document.getElementById('where').textContent = job.tenant + ' / ' + job.job;
  const summary = document.getElementById('summary');
  summary.replaceChildren(
    el('span', {class: 'state-' + job.state}, job.state),
    el('span', {id: 'batches', 'data-batches': job.batches}, job.batches + ' batches'),
    el('span', {}, 'interval ' + job.interval_ms + ' ms'),
    el('span', {}, job.records_in + ' records in, ' + job.records_out + ' out'),
    el('span', {}, 'processing p50 ' + ms(job.processing_p50_us) + ', p99 ' + ms(job.processing_p99_us)),
    el('span', {}, 'scheduling delay p50 ' + ms(job.scheduling_p50_us) + ', p99 ' + ms(job.scheduling_p99_us)));
  drawCharts(job, batches);
  document.getElementById('steps').replaceChildren(table(
    [['Step'], ['Records out', 'num'], ['Time', 'num'], ['UDF calls', 'num'], ['UDF failures', 'num'], ['UDF time', 'num'], ['UDF memory', 'num'],
      ['State entries', 'num'], ['State bytes', 'num']],
    job.steps.map(s => el('tr', {}, el('td', {}, s.step), el('td', {class: 'num'}, s.records),
      el('td', {class: 'num'}, ms(s.micros)), el('td', {class: 'num'}, s.udf_calls),
      el('td', {class: 'num'}, s.udf_failures), el('td', {class: 'num'}, ms(s.udf_micros)),
      el('td', {class: 'num'}, bytes(s.udf_memory_bytes)), el('td', {class: 'num'}, s.state_entries),
      el('td', {class: 'num'}, bytes(s.state_bytes))))));
  document.getElementById('sources').replaceChildren(table([['Source'], ['Records in', 'num']],
    job.sources.map(s => el('tr', {}, el('td', {}, s.source), el('td', {class: 'num'}, s.records_in)))));
  document.getElementById('checkpoints').textContent = job.checkpoints + ' written, ' +
    bytes(job.checkpoint_bytes) + ' in ' + seconds(job.checkpoint_seconds) +
    '; write-ahead log ' + bytes(job.wal_bytes) + '; ' + job.buffered_records +
    ' records buffered in receivers; late rows dropped: ' + job.late_rows_dropped;
  const failure = document.getElementById('failure');
  if (job.failure) {
    failure.replaceChildren(
      el('p', {class: 'failure'}, job.failure.reason + ' at ' + new Date(job.failure.at_seconds * 1000).toISOString()),
      el('pre', {id: 'failure-text'}, job.failure.text));
  } else {
    failure.replaceChildren(el('p', {}, 'none'));
  }
  document.getElementById('udfs').replaceChildren(table([['UDF'], ['SHA-256']],
    job.udfs.map(u => el('tr', {}, el('td', {}, u.label), el('td', {}, el('code', {}, u.sha256))))));
  document.getElementById('manifest').textContent = job.manifest;
}

async function poll() {
  const match = location.pathname.match(/^\/jobs\/(.+)$/);
  try {
    if (match) await drawJob(decodeURIComponent(match[1]), new URLSearchParams(location.search).get('tenant'));
    else await drawList();
    main.dataset.updated = Date.now();
  } catch (error) {
    console.error(error);
  }
  setTimeout(poll, POLL_MS);
}
poll();
