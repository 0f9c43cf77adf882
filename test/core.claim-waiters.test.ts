import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ClaimWaiters, type WakeReason } from '../src/core/claim-waiters.js';
import { requirementKey } from '../src/domain/requirements.js';

/** A waiter that records its wake-ups; `want` can be changed between notifications. */
function waiter(name: string, capabilities: string[], want = 1, agentId?: string) {
  const w = {
    name,
    agentId,
    capabilities: new Set(capabilities),
    namespace: 'default',
    wanted: want,
    wakes: [] as (WakeReason | undefined)[],
    want: () => w.wanted,
    wake: (reason?: WakeReason) => void w.wakes.push(reason),
  };
  return w;
}

const a = requirementKey(['a']);
const b = requirementKey(['b']);

describe('ClaimWaiters', () => {
  it('wakes only as many waiters as the new tasks can satisfy, oldest first', () => {
    const waiters = new ClaimWaiters();
    const ws = [waiter('w1', ['a']), waiter('w2', ['a']), waiter('w3', ['a'])];
    for (const w of ws) waiters.add(w);
    waiters.notify({ [a]: 2 });
    assert.deepEqual(ws.map((w) => w.wakes), [[{ key: a, count: 1 }], [{ key: a, count: 1 }], []]);
  });

  it('counts a waiter against as many tasks as it wants, and no more than appeared', () => {
    const waiters = new ClaimWaiters();
    const big = waiter('big', ['a'], 5);
    const next = waiter('next', ['a'], 5);
    waiters.add(big);
    waiters.add(next);
    waiters.notify({ [a]: 3 });
    assert.deepEqual(big.wakes, [{ key: a, count: 3 }]);
    assert.deepEqual(next.wakes, [], 'three tasks are all counted for the first waiter');
    waiters.notify({ [a]: 7 });
    // The first waiter went to the back of the line when it was woken.
    assert.deepEqual(next.wakes, [{ key: a, count: 5 }]);
    assert.deepEqual(big.wakes.at(-1), { key: a, count: 2 });
  });

  it('skips a waiter that wants nothing (a full agent, a socket without credit)', () => {
    const waiters = new ClaimWaiters();
    const full = waiter('full', ['a'], 0);
    const free = waiter('free', ['a']);
    waiters.add(full);
    waiters.add(free);
    waiters.notify({ [a]: 1 });
    assert.deepEqual(full.wakes, []);
    assert.deepEqual(free.wakes, [{ key: a, count: 1 }]);
  });

  it('asks a waiter that wants nothing once, then leaves it out of the line until mayWant puts it back at the end', () => {
    const waiters = new ClaimWaiters();
    // Agents that were idle, in the line, and have each taken a task since.
    const busy = Array.from({ length: 1_000 }, (_, i) => waiter(`busy-${i}`, ['a']));
    let asked = 0;
    for (const w of busy) {
      w.want = () => (asked++, w.wanted);
      waiters.add(w);
      w.wanted = 0;
    }
    const free = [waiter('free-1', ['a']), waiter('free-2', ['a'])];
    for (const w of free) waiters.add(w);
    asked = 0;
    for (let i = 0; i < 5; i++) waiters.notify({ [a]: 1 });
    // A busy fleet is not walked at every task submitted while it is busy.
    assert.equal(asked, 1_000, 'each busy waiter asked once, by the first notification');
    assert.deepEqual(free.map((w) => w.wakes.length), [3, 2]);

    // One frees a slot: until its owner says so it is not considered, then it stands at the end of the line.
    const back = busy[500];
    back.wanted = 1;
    waiters.notify({ [a]: 1 });
    assert.deepEqual(back.wakes, []);
    waiters.mayWant(back);
    waiters.notify({ [a]: 3 });
    assert.deepEqual(back.wakes, [{ key: a, count: 1 }]);
    assert.deepEqual(free.map((w) => w.wakes.length), [4, 4], 'the two free waiters were ahead of it');

    // mayWant leaves out a waiter that still wants nothing, and one that was removed.
    const stillBusy = busy[0];
    waiters.mayWant(stillBusy);
    const removed = waiter('removed', ['a']);
    const remove = waiters.add(removed);
    remove();
    waiters.mayWant(removed);
    asked = 0;
    waiters.notify({ [a]: 10 });
    assert.deepEqual(stillBusy.wakes, []);
    assert.deepEqual(removed.wakes, []);
    assert.equal(asked, 1, 'only the busy waiter mayWant was called for was asked again');
  });

  it('looks for a task among the waiters holding its requirements only', () => {
    const waiters = new ClaimWaiters();
    const gpu = requirementKey(['gpu']);
    let asked = 0;
    const cpus = Array.from({ length: 1_000 }, (_, i) => waiter(`cpu-${i}`, ['cpu', `agent:cpu-${i}`]));
    for (const w of cpus) {
      w.want = () => (asked++, w.wanted);
      waiters.add(w);
    }
    const gpus = [waiter('gpu-1', ['gpu']), waiter('gpu-2', ['gpu'])];
    for (const w of gpus) waiters.add(w);
    asked = 0;
    for (let i = 0; i < 3; i++) waiters.notify({ [gpu]: 1 });
    assert.equal(asked, 0, 'no CPU agent was asked about a GPU task');
    assert.deepEqual(gpus.map((w) => w.wakes.length), [2, 1], 'the GPU agents took turns');
    // A task pinned to one agent is looked for in that agent's own line.
    waiters.notify({ [requirementKey(['agent:cpu-700'])]: 1 });
    assert.equal(asked, 1);
    assert.deepEqual(cpus[700].wakes, [{ key: requirementKey(['agent:cpu-700']), count: 1 }]);
    // The order of each capability's line is the line's: woken, cpu-700 went to the back of both.
    const cpu = requirementKey(['cpu']);
    waiters.notify({ [cpu]: 999 });
    assert.equal(cpus[700].wakes.length, 1, '999 CPU tasks go to the 999 agents waiting longer');
    waiters.notify({ [cpu]: 1 });
    assert.equal(cpus[700].wakes.length, 2);
  });

  it("looks for a default task among default's waiters, not other namespaces' that hold its capability", () => {
    const waiters = new ClaimWaiters();
    const gpu = requirementKey(['gpu']);
    let asked = 0;
    // Waiting longer than default's one GPU agent.
    const teamA = Array.from({ length: 1_000 }, (_, i) => ({ ...waiter(`team-a-${i}`, ['gpu', 'namespace:team-a']), namespace: 'team-a' }));
    for (const w of teamA) {
      w.want = () => (asked++, w.wanted);
      waiters.add(w);
    }
    const mine = waiter('default-gpu', ['gpu']);
    waiters.add(mine);
    asked = 0;
    waiters.notify({ [gpu]: 1 });
    assert.equal(asked, 0, 'no team-a agent was asked');
    assert.deepEqual(mine.wakes, [{ key: gpu, count: 1 }]);
    waiters.notify({ [requirementKey(['gpu', 'namespace:team-a'])]: 1 });
    assert.equal(teamA[0].wakes.length, 1, "and team-a's task goes to team-a");
  });

  it('walks once for a requirement no waiter in the line can do, until a waiter able to do it joins', () => {
    const waiters = new ClaimWaiters();
    const both = requirementKey(['crawl', 'render']);
    // Idle agents that can crawl or render, none both; the one that can do both is busy.
    let asked = 0;
    const others = Array.from({ length: 1_000 }, (_, i) => waiter(`other-${i}`, [i % 2 === 0 ? 'crawl' : 'render']));
    for (const w of others) {
      w.want = () => (asked++, w.wanted);
      waiters.add(w);
    }
    const busy = waiter('busy', ['crawl', 'render']);
    waiters.add(busy);
    busy.wanted = 0;
    asked = 0;
    for (let i = 0; i < 5; i++) waiters.notify({ [both]: 1 });
    assert.equal(asked, 500, 'one of the two lines was walked, for the first task only');
    assert.ok(others.every((w) => w.wakes.length === 0));

    // An agent able to do both registering joins the line: it is woken for the next task.
    const fresh = waiter('fresh', ['crawl', 'render']);
    waiters.add(fresh);
    waiters.notify({ [both]: 1 });
    assert.deepEqual(fresh.wakes, [{ key: both, count: 1 }]);

    // The busy one frees a slot: once its owner says so, it is found too.
    fresh.wanted = 0;
    waiters.notify({ [both]: 1 });
    busy.wanted = 1;
    waiters.notify({ [both]: 1 });
    assert.deepEqual(busy.wakes, [], 'not in the line until mayWant');
    waiters.mayWant(busy);
    waiters.notify({ [both]: 1 });
    assert.deepEqual(busy.wakes, [{ key: both, count: 1 }]);

    // Another requirement in the same notification is not held back by the one remembered.
    busy.wanted = 0;
    waiters.notify({ [both]: 1 });
    const crawl = requirementKey(['crawl']);
    waiters.notify({ [both]: 1, [crawl]: 1 });
    assert.deepEqual(others[0].wakes, [{ key: crawl, count: 1 }]);
  });

  it('wakes a waiter only for tasks whose every requirement it has, and once per notification', () => {
    const waiters = new ClaimWaiters();
    const onlyA = waiter('onlyA', ['a'], 10);
    const both = waiter('both', ['a', 'b'], 10);
    waiters.add(onlyA);
    waiters.add(both);
    const ab = requirementKey(['a', 'b']);
    waiters.notify({ [ab]: 1, [b]: 1 });
    assert.deepEqual(onlyA.wakes, []);
    // Counted for one requirement per notification: the other goes to the next waiter who can do it.
    assert.deepEqual(both.wakes, [{ key: ab, count: 1 }]);
    waiters.notify({ [requirementKey([])]: 1 });
    assert.deepEqual(onlyA.wakes, [{ key: requirementKey([]), count: 1 }], 'a task that requires nothing suits anyone');
  });

  it('moves a woken waiter to the back of the line, so that work spreads over agents', () => {
    const waiters = new ClaimWaiters();
    const order: string[] = [];
    for (const name of ['w1', 'w2', 'w3']) {
      const w = waiter(name, ['a']);
      w.wake = () => void order.push(name);
      waiters.add(w);
    }
    for (let i = 0; i < 6; i++) waiters.notify({ [a]: 1 });
    assert.deepEqual(order, ['w1', 'w2', 'w3', 'w1', 'w2', 'w3']);
  });

  it('wakes an agent\'s waiters without a reason when its room changes, and no one else\'s', () => {
    const waiters = new ClaimWaiters();
    const mine = waiter('mine', ['a'], 0, 'agent-1');
    const alsoMine = waiter('alsoMine', ['b'], 0, 'agent-1');
    const theirs = waiter('theirs', ['a'], 0, 'agent-2');
    for (const w of [mine, alsoMine, theirs]) waiters.add(w);
    waiters.wakeAgent('agent-1');
    assert.deepEqual(mine.wakes, [undefined]);
    assert.deepEqual(alsoMine.wakes, [undefined]);
    assert.deepEqual(theirs.wakes, []);
    waiters.wakeAgent('nobody');
  });

  it('forgets a removed waiter, by task and by agent', () => {
    const waiters = new ClaimWaiters();
    const w = waiter('w', ['a'], 1, 'agent-1');
    const remove = waiters.add(w);
    assert.equal(waiters.size, 1);
    remove();
    remove();
    assert.equal(waiters.size, 0);
    waiters.notify({ [a]: 1 });
    waiters.wakeAgent('agent-1');
    assert.deepEqual(w.wakes, []);
  });

  it('moves the generation on every notification, even one that wakes nobody', () => {
    const waiters = new ClaimWaiters();
    const before = waiters.generation;
    waiters.notify({ [a]: 1 });
    waiters.notify({});
    assert.equal(waiters.generation, before + 2);
  });

  it('lets a woken waiter remove itself or notify again from inside its wake-up', () => {
    const waiters = new ClaimWaiters();
    const second = waiter('second', ['a']);
    let remove = () => {};
    const first = {
      capabilities: new Set(['a']),
      namespace: 'default',
      want: () => 1,
      // Takes other work, and hands its wake-up on as the delivery does.
      wake: (reason?: WakeReason) => {
        remove();
        waiters.notify({ [reason!.key]: reason!.count });
      },
    };
    remove = waiters.add(first);
    waiters.add(second);
    waiters.notify({ [a]: 1 });
    assert.deepEqual(second.wakes, [{ key: a, count: 1 }]);
    assert.equal(waiters.size, 1);
  });
});
