/**
 * The dashboard under load: `npm run bench -- dashboard [--tasks 100000] [--events 1000] [--seconds 10]`.
 *
 * A fleetd process with --tasks tasks stored and about --events events a second flowing (tasks
 * submitted, claimed and completed in a loop). Measured in headless Chromium:
 *   - first load: navigation start to the overview painted (stats and charts on screen), cold cache;
 *   - JavaScript shipped for the first view, gzipped;
 *   - long tasks (> 50 ms, PerformanceObserver 'longtask') while scrolling the task table;
 * and, with autocannon at a fixed request rate, the API's P50/P99 with no dashboard open and with
 * ten open (the baseline and the comparison run back to back in the same process).
 * With FLEETD_SCREENSHOTS=docs it also saves the overview and the task table under this load.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import autocannon from 'autocannon';
import type { Browser, Page } from 'playwright-core';
import { DASHBOARD_DIR } from '../../src/server/dashboard.js';
import { launchBrowser } from '../../test/browser.js';
import { BENCH_ADMIN_KEY, authHeaders, flags, percentile, report, startServerProcess, type Row } from '../lib.js';

const SEED_TYPES = ['email.send', 'crawl.page', 'report.build', 'image.resize', 'llm.summarise'];

async function post(url: string, body: unknown): Promise<any> {
  const res = await fetch(url, { method: 'POST', headers: { ...authHeaders, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

async function seed(url: string, tasks: number): Promise<void> {
  const batch = 1000;
  for (let done = 0; done < tasks; done += batch) {
    const n = Math.min(batch, tasks - done);
    await post(`${url}/v1/tasks/batch`, {
      tasks: Array.from({ length: n }, (_, i) => ({
        type: SEED_TYPES[(done + i) % SEED_TYPES.length],
        priority: (done + i) % 4,
        payload: { n: done + i, note: 'seeded for the dashboard benchmark' },
      })),
    });
  }
  await post(`${url}/v1/agents/batch`, {
    agents: Array.from({ length: 50 }, (_, i) => ({ name: `worker-${i}`, capabilities: [SEED_TYPES[i % SEED_TYPES.length]] })),
  });
}

/**
 * Submits, claims and completes tasks in rounds so that about `perSecond` bus events flow (created,
 * claimed and completed: three per task). Each round makes up what earlier rounds fell short of, so
 * the rate holds when the machine is busy. Returns a stop function giving the events made.
 */
async function generateEvents(url: string, perSecond: number): Promise<() => Promise<{ events: number; seconds: number }>> {
  const { agent } = await post(`${url}/v1/agents`, { name: 'live-worker', capabilities: ['bench.live'], maxConcurrency: 10_000 });
  let events = 0;
  let running = true;
  const started = Date.now();
  const loop = (async () => {
    while (running) {
      const roundStart = Date.now();
      const due = (perSecond * (roundStart - started)) / 1000 - events;
      const n = Math.min(500, Math.max(1, Math.round(due / 3)));
      await post(`${url}/v1/tasks/batch`, { tasks: Array.from({ length: n }, () => ({ type: 'bench.live', payload: { at: roundStart } })) });
      const { tasks } = await post(`${url}/v1/tasks/claim`, { agentId: agent.id, max: n });
      await Promise.all(tasks.map((t: { id: number }) => post(`${url}/v1/tasks/${t.id}/complete`, { agentId: agent.id, result: { ok: true } })));
      events += n + tasks.length * 2;
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - roundStart))));
    }
  })();
  return async () => {
    running = false;
    await loop;
    return { events, seconds: (Date.now() - started) / 1000 };
  };
}

/** Navigation start to the overview painted, in a fresh context (cold cache), and the scripts it loaded. */
async function coldLoad(browser: Browser, url: string): Promise<{ ms: number; scripts: { url: string; bytes: number; gzipped: number }[] }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Signed in as an operator is: the key in local storage.
  await context.addInitScript((key) => localStorage.setItem('fleetd.apiKey', key), BENCH_ADMIN_KEY);
  const page = await context.newPage();
  const scripts: Promise<{ url: string; bytes: number; gzipped: number }>[] = [];
  page.on('response', (res) => {
    if (res.request().resourceType() !== 'script') return;
    scripts.push(res.body().then((body) => ({ url: new URL(res.url()).pathname, bytes: body.length, gzipped: gzipSync(body, { level: 9 }).length })));
  });
  await page.goto(url + '/');
  await page.waitForSelector('[data-ready=overview] canvas', { timeout: 30_000 });
  const ms = await page.evaluate(() => new Promise<number>((r) => requestAnimationFrame(() => r(performance.now()))));
  const loaded = await Promise.all(scripts);
  await context.close();
  return { ms, scripts: loaded };
}

interface TraceEvent {
  name: string;
  ph: string;
  pid: number;
  tid: number;
  dur?: number;
  tdur?: number;
  args?: { name?: string };
}

/**
 * Scrolls the task table with the mouse wheel under a Chromium trace, and returns the renderer
 * main thread's tasks longer than 50 ms: by wall time (what the page felt), and by the thread's own
 * CPU time (what the page's code cost; on a busy machine a task can be long only because the
 * thread was waiting for a core).
 */
async function scrollTasks(browser: Browser, url: string, wheelSteps: number) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Signed in as an operator is: the key in local storage.
  await context.addInitScript((key) => localStorage.setItem('fleetd.apiKey', key), BENCH_ADMIN_KEY);
  const page = await context.newPage();
  await page.goto(url + '/#/tasks');
  await page.waitForSelector('[data-task-id]', { timeout: 30_000 });
  const box = (await page.locator('[data-testid=task-scroller]').boundingBox())!;
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await browser.startTracing(page, { categories: ['disabled-by-default-devtools.timeline', 'devtools.timeline'] });
  const started = Date.now();
  for (let i = 0; i < wheelSteps; i++) {
    await page.mouse.wheel(0, 600);
    await page.waitForTimeout(16);
  }
  await page.waitForTimeout(500);
  const seconds = (Date.now() - started) / 1000;
  const trace = JSON.parse((await browser.stopTracing()).toString()) as { traceEvents: TraceEvent[] };
  const rowsLoaded = Number(await page.getAttribute('[data-loaded]', 'data-loaded'));
  await context.close();

  const mainThreads = new Set(
    trace.traceEvents.filter((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain').map((e) => `${e.pid}:${e.tid}`),
  );
  const tasks = trace.traceEvents.filter((e) => e.name === 'RunTask' && e.ph === 'X' && mainThreads.has(`${e.pid}:${e.tid}`));
  const ms = (us: number | undefined) => (us ?? 0) / 1000;
  return {
    seconds,
    rowsLoaded,
    tasks: tasks.length,
    longByWall: tasks.filter((t) => ms(t.dur) > 50).map((t) => Math.round(ms(t.dur))),
    longByCpu: tasks.filter((t) => ms(t.tdur) > 50).map((t) => Math.round(ms(t.tdur))),
    maxCpuMs: Math.round(Math.max(0, ...tasks.map((t) => ms(t.tdur)))),
    maxWallMs: Math.round(Math.max(0, ...tasks.map((t) => ms(t.dur)))),
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc (clock ticks of 10 ms). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** P50/P99 of a fixed-rate mix of API calls (submit, get one task, list a page, stats). */
async function apiLatency(url: string, seconds: number, pid: number): Promise<{ p50: number; p99: number; rps: number; errors: number; serverCpu: number }> {
  const cpuBefore = cpuSeconds(pid);
  const started = Date.now();
  const result = await autocannon({
    url,
    connections: 10,
    overallRate: 400,
    duration: seconds,
    requests: [
      { method: 'POST', path: '/v1/tasks', headers: { ...authHeaders, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'bench.probe' }) },
      { method: 'GET', path: '/v1/tasks/1', headers: authHeaders },
      { method: 'GET', path: '/v1/tasks?type=crawl.page&limit=20', headers: authHeaders },
      { method: 'GET', path: '/v1/stats', headers: authHeaders },
    ],
  });
  const serverCpu = (cpuSeconds(pid) - cpuBefore) / ((Date.now() - started) / 1000);
  return { p50: result.latency.p50, p99: result.latency.p99, rps: result.requests.average, errors: result.errors + result.non2xx, serverCpu };
}

async function openDashboards(browser: Browser, url: string, n: number): Promise<Page[]> {
  const views = ['/', '/#/tasks', '/#/agents', '/', '/#/tasks', '/#/agents', '/', '/#/tasks', '/#/locks', '/'];
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Signed in as an operator is: the key in local storage.
  await context.addInitScript((key) => localStorage.setItem('fleetd.apiKey', key), BENCH_ADMIN_KEY);
  const pages: Page[] = [];
  for (let i = 0; i < n; i++) {
    const page = await context.newPage();
    await page.goto(url + views[i % views.length]);
    pages.push(page);
  }
  await Promise.all(pages.map((p) => p.waitForSelector('main > :not(p.muted)', { timeout: 30_000 })));
  return pages;
}

export default async function dashboard(args: string[]): Promise<void> {
  const opts = flags(args, { tasks: 100_000, events: 1_000, seconds: 10, loads: 5, dashboards: 10, wheel: 200 });
  if (!existsSync(join(DASHBOARD_DIR, 'index.html'))) throw new Error('the dashboard is not built: npm run build');
  const server = await startServerProcess();
  const browser = await launchBrowser();
  try {
    process.stdout.write(`seeding ${opts.tasks} tasks…\n`);
    await seed(server.url, opts.tasks);
    const idleLoads = [];
    for (let i = 0; i < opts.loads; i++) idleLoads.push((await coldLoad(browser, server.url)).ms);
    const stopEvents = await generateEvents(server.url, opts.events);

    const loads = [];
    for (let i = 0; i < opts.loads; i++) loads.push(await coldLoad(browser, server.url));
    const firstView = loads[0].scripts;
    const jsGzipped = firstView.reduce((s, x) => s + x.gzipped, 0);
    const jsRaw = firstView.reduce((s, x) => s + x.bytes, 0);

    const scroll = await scrollTasks(browser, server.url, opts.wheel);

    const without = await apiLatency(server.url, opts.seconds, server.pid);
    const pages = await openDashboards(browser, server.url, opts.dashboards);
    const withDashboards = await apiLatency(server.url, opts.seconds, server.pid);
    // FLEETD_SCREENSHOTS=docs: the overview and the task table as they look under this load.
    const shots = process.env.FLEETD_SCREENSHOTS;
    if (shots) {
      await pages[0].screenshot({ path: join(shots, 'dashboard-overview.png') });
      await pages[1].screenshot({ path: join(shots, 'dashboard-tasks.png') });
    }
    await Promise.all(pages.map((p) => p.close()));

    const flow = await stopEvents();
    const loadMs = loads.map((l) => l.ms);
    const rows: Row[] = [
      { measure: 'first load to overview painted, median, no events flowing', value: Math.round(percentile(idleLoads, 50)), unit: 'ms', target: '< 1000' },
      { measure: 'first load to overview painted, median (cold cache)', value: Math.round(percentile(loadMs, 50)), unit: 'ms', target: '< 1000' },
      { measure: 'first load to overview painted, worst of runs', value: Math.round(Math.max(...loadMs)), unit: 'ms', target: '< 1000' },
      { measure: 'JS for the first view, gzipped', value: Math.round(jsGzipped / 102.4) / 10, unit: 'KB', target: '< 100' },
      { measure: 'JS for the first view, uncompressed', value: Math.round(jsRaw / 102.4) / 10, unit: 'KB', target: '' },
      { measure: 'scrolling the task table: main-thread tasks > 50 ms of CPU', value: scroll.longByCpu.length, unit: 'count', target: '0' },
      { measure: 'scrolling the task table: longest task, CPU time', value: scroll.maxCpuMs, unit: 'ms', target: '< 50' },
      { measure: 'scrolling the task table: main-thread tasks > 50 ms wall', value: scroll.longByWall.length, unit: 'count', target: '0' },
      { measure: 'scrolling the task table: longest task, wall time', value: scroll.maxWallMs, unit: 'ms', target: '' },
      { measure: 'task rows loaded by scrolling', value: scroll.rowsLoaded, unit: 'rows', target: '' },
      { measure: 'API P50, no dashboard', value: without.p50, unit: 'ms', target: '' },
      { measure: `API P50, ${opts.dashboards} dashboards open`, value: withDashboards.p50, unit: 'ms', target: '' },
      { measure: 'API P99, no dashboard', value: without.p99, unit: 'ms', target: '' },
      { measure: `API P99, ${opts.dashboards} dashboards open`, value: withDashboards.p99, unit: 'ms', target: '' },
      { measure: 'API P99 ratio (dashboards / none)', value: Math.round((withDashboards.p99 / Math.max(without.p99, 1)) * 100) / 100, unit: 'x', target: '≈ 1' },
      { measure: 'server CPU, no dashboard', value: Math.round(without.serverCpu * 100), unit: '% of a core', target: '' },
      { measure: `server CPU, ${opts.dashboards} dashboards open`, value: Math.round(withDashboards.serverCpu * 100), unit: '% of a core', target: '' },
      { measure: 'API errors (both runs)', value: without.errors + withDashboards.errors, unit: 'count', target: '0' },
      { measure: 'bus events generated', value: Math.round(flow.events / flow.seconds), unit: '/s', target: String(opts.events) },
    ];
    report('dashboard', rows, {
      options: opts,
      firstViewScripts: firstView,
      loadMs,
      idleLoads,
      scroll,
      api: { without, withDashboards },
      serverRssMb: server.rssMb(),
    });
  } finally {
    await browser.close();
    await server.stop();
  }
}
