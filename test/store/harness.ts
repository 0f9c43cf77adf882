import assert from 'node:assert/strict';
import { afterEach, beforeEach } from 'node:test';
import { repeatCheck, taskRequestHash } from '../../src/core/rules/idempotency.js';
import { afterFailure, lostLeases } from '../../src/core/rules/retry.js';
import { initialStatus } from '../../src/core/rules/tasks.js';
import { expiryOf, ranOutLeases } from '../../src/core/rules/control.js';
import type { TaskWithoutPayload, Task } from '../../src/domain/types.js';
import type { Driver } from '../../src/store/driver.js';
import type { EndLease, Store, TaskInsertParams, TaskWrite } from '../../src/store/store.js';

/**
 * A fresh, migrated, empty driver, and what removes it afterwards. `openSibling`, where the driver
 * supports it, opens a second driver on the same data: another node sharing the store.
 */
export type DriverFactory = () => Promise<{ driver: Driver; openSibling?: () => Driver; destroy(): Promise<void> }>;

export const T0 = 1_700_000_000_000;

/** A task's payload, parsed from the text the store keeps (Task.payloadJson). */
export const payloadOf = (t: Pick<Task, 'payloadJson'>): unknown => JSON.parse(t.payloadJson);

/** A task as core would hand it to the store: its first status and request hash decided by core's rules. */
export function task(type: string, extra: Partial<Omit<TaskInsertParams, 'status' | 'requestHash' | 'expiresAt'>> = {}): TaskInsertParams {
  const t = {
    namespace: 'default',
    type,
    payload: { type } as unknown,
    priority: 0,
    requires: [type],
    idempotencyKey: null as string | null,
    maxAttempts: 3,
    leaseMs: 1_000,
    backoffMs: 100,
    runAt: T0,
    executionTimeoutMs: null as number | null,
    scheduleTimeoutMs: null as number | null,
    tags: [] as string[],
    metadata: {} as Record<string, unknown>,
    ...extra,
  };
  return {
    ...t,
    expiresAt: expiryOf(t.runAt, t.scheduleTimeoutMs),
    status: initialStatus(t.runAt, T0),
    requestHash: t.idempotencyKey === null ? null : taskRequestHash(t),
  };
}

/** Core's rules, as the services pass them. */
export const rules = {
  failed: (now: number, retryable = true, error: unknown = null): EndLease => (lease) => afterFailure(lease, { error, retryable, now, backoffMaxMs: 60_000 }),
  expired: (now: number): EndLease => lostLeases('expired', now),
  offline: (now: number): EndLease => lostLeases('agent_offline', now),
  /** The lease rescuer's: an attempt past its execution timeout fails as FLEETD_ERR_TIMEOUT. */
  ranOut: (now: number): EndLease => ranOutLeases(now, 60_000),
};

/** The task a conditional write wrote; fails the test if the store refused it. */
export function written<T extends TaskWithoutPayload>(w: TaskWrite<T>): T {
  assert.ok(w.task, `the write was refused: the task is ${w.current ? w.current.status : 'gone'}`);
  return w.task;
}

/** Asserts the store refused the write and reports the task as it is now. */
export function refused(w: TaskWrite<TaskWithoutPayload>, current: Partial<Task> | undefined): void {
  assert.equal(w.task, undefined, 'the write was refused');
  if (current === undefined) assert.equal(w.current, undefined);
  else assert.deepEqual(Object.fromEntries(Object.keys(current).map((k) => [k, w.current?.[k as keyof Task]])), current);
}

/**
 * A fresh driver for each test of the enclosing suite, and helpers on it. The getters read the
 * current test's driver.
 */
export function eachTest(factory: DriverFactory) {
  let current: Awaited<ReturnType<DriverFactory>> | undefined;
  let agentSeq = 0;
  beforeEach(async () => {
    current = await factory();
  });
  afterEach(async () => {
    await current?.destroy();
    current = undefined;
  });
  const h = {
    get driver(): Driver {
      return current!.driver;
    },
    get store(): Store {
      return current!.driver.store;
    },
    openSibling(): Driver {
      assert.ok(current?.openSibling, 'this driver opens siblings');
      return current.openSibling();
    },
    async agent(capabilities: string[], maxConcurrency = 10, now = T0, namespace = 'default'): Promise<string> {
      const id = `agent-${++agentSeq}`;
      await h.store.agentCreateMany([{ id, namespace, name: id, capabilities, labels: { role: 'test' }, maxConcurrency, tokenHash: `hash-${id}`, now }]);
      return id;
    },
    async submit(...tasks: TaskInsertParams[]): Promise<Task[]> {
      return (await h.store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks) })).map((r) => r.task);
    },
  };
  return h;
}

/** Every task, through the public listing (paged), to recount what the counters claim. */
export async function allTasks(store: Store): Promise<Task[]> {
  const out: Task[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.taskList({ limit: 7, cursor, order: 'asc' });
    out.push(...page.items);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return out;
}

export async function assertCountersEqualRecount(store: Store): Promise<void> {
  const recount = new Map<string, number>();
  for (const t of await allTasks(store)) {
    const key = `${t.type}|${t.priority}|${t.status}`;
    recount.set(key, (recount.get(key) ?? 0) + 1);
  }
  const counted = new Map((await store.taskCounts()).map((c) => [`${c.type}|${c.priority}|${c.status}`, c.count]));
  assert.deepEqual(Object.fromEntries([...counted].sort()), Object.fromEntries([...recount].sort()));
  const agentRecount: Record<string, number> = { online: 0, stale: 0, offline: 0 };
  let cursor: string | undefined;
  do {
    const page = await store.agentList({ limit: 5, cursor });
    for (const a of page.items) agentRecount[a.status]++;
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  const agentCounted = Object.fromEntries((await store.agentCounts()).map((c) => [c.status, c.count]));
  assert.deepEqual(agentCounted, agentRecount);
}
