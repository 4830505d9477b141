// Node.js side of bench/run: what perf_hooks.monitorEventLoopDelay sees.
//
// usage: node stalls.js stalls --resolution MS [--schedule 30,100,...] [--gap-ms N] --events FILE
//        node stalls.js throughput --resolution MS [--reps N] [--window-ms N]
//        node stalls.js idle --resolution MS|0 --seconds S
//
// stalls: the same schedule as bench/stalls.py (busy loops on the main
// thread). The histogram is read every 100 ms, the way a monitoring loop
// would poll it; an alert is a poll whose max is over 100 ms (the histogram
// is reset after each alert). One JSON line
// per stall and per alert goes to FILE (performance.now() times, ms).
// throughput: setImmediate callbacks per CPU second of the process
// (process.cpuUsage), each repetition one window
// with the histogram enabled and one without (order alternating).
// idle: an idle process (one long timer) with the histogram enabled
// (resolution 0: not created), for an outside wakeup count.
'use strict';
const { monitorEventLoopDelay, performance } = require('perf_hooks');
const fs = require('fs');

const POLL_MS = 100;
const THRESHOLD_MS = 100;

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const cmd = process.argv[2];
const resolution = Number(arg('--resolution', '20'));

function culprit(until) {
  while (performance.now() < until) { /* busy */ }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function stalls() {
  const schedule = arg('--schedule', '30,100,300,1000,5000').split(',').map(Number);
  const gap = Number(arg('--gap-ms', '500'));
  const events = [];
  const h = monitorEventLoopDelay({ resolution });
  h.enable();
  const poll = setInterval(() => {
    const maxMs = h.max / 1e6;
    if (maxMs > THRESHOLD_MS) {
      events.push({ alert: 'eld', at_ms: performance.now(), max_ms: maxMs });
      h.reset();
    }
  }, POLL_MS);
  await sleep(300);
  for (const ms of schedule) {
    const t0 = performance.now();
    culprit(t0 + ms);
    const t1 = performance.now();
    events.push({ stall_ms: ms, start_ms: t0, end_ms: t1 });
    await sleep(gap);
  }
  clearInterval(poll);
  h.disable();
  fs.writeFileSync(arg('--events'), events.map((e) => JSON.stringify(e)).join('\n') + '\n');
}

function window(ms) {
  return new Promise((resolve) => {
    let n = 0;
    const c0 = process.cpuUsage();
    const end = performance.now() + ms;
    const cpuS = () => { const c = process.cpuUsage(c0); return (c.user + c.system) / 1e6; };
    const step = () => {
      n++;
      if (n % 1000 === 0 && performance.now() >= end) resolve(n / cpuS());
      else setImmediate(step);
    };
    setImmediate(step);
  });
}

async function throughput() {
  const reps = Number(arg('--reps', '5'));
  const ms = Number(arg('--window-ms', '300'));
  const h = monitorEventLoopDelay({ resolution });
  await window(50);
  const pairs = [];
  for (let r = 0; r < reps; r++) {
    const res = {};
    for (const on of r % 2 === 0 ? [false, true] : [true, false]) {
      if (on) h.enable();
      res[on ? 'on' : 'off'] = await window(ms);
      if (on) h.disable();
    }
    pairs.push(res);
  }
  console.log(JSON.stringify({ monitor: `eld${resolution}`, pairs }));
}

function idle() {
  if (resolution > 0) monitorEventLoopDelay({ resolution }).enable();
  setTimeout(() => {}, Number(arg('--seconds', '20')) * 1000 + 5000);
}

if (cmd === 'stalls') stalls();
else if (cmd === 'throughput') throughput();
else if (cmd === 'idle') idle();
else {
  console.error('usage: node stalls.js stalls|throughput|idle --resolution MS ...');
  process.exit(2);
}
