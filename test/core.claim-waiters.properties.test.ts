import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ClaimWaiters, type WakeReason } from '../src/core/claim-waiters.js';
import { canClaim, requirementKey } from '../src/domain/requirements.js';

/**
 * Random waiters of two namespaces, with capabilities, labels and pins, added and removed, whose
 * wants rise and fall (their owner calling mayWant when one rises, as the contract asks), and random
 * notifications of several requirements. After each notification, for every requirement: no more
 * counted than announced, no waiter counted for more than it wants or twice, and, if some of the
 * tasks were counted for nobody, no waiter able to do them (wanting tasks, holding every
 * requirement, of the namespace) was left asleep. That is what keeps a task from sitting queued
 * beside an idle agent.
 */
const CAPABILITIES = ['a', 'b', 'label:region=eu'];
const NAMESPACES = ['default', 'team-a'];
const REQUIREMENTS = [[], ['a'], ['b'], ['a', 'b'], ['label:region=eu'], ['a', 'label:region=eu'], ['agent:w0'], ['agent:w1'], ['agent:w2']];
const KEYS = NAMESPACES.flatMap((ns) => REQUIREMENTS.map((r) => requirementKey(ns === 'default' ? r : [...r, `namespace:${ns}`])));

type Op =
  | { op: 'add'; namespace: string; capabilities: string[]; want: number }
  | { op: 'remove'; pick: number }
  | { op: 'want'; pick: number; want: number }
  | { op: 'notify'; tasks: [number, number][] };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('add' as const), namespace: fc.constantFrom(...NAMESPACES), capabilities: fc.subarray(CAPABILITIES), want: fc.integer({ min: 0, max: 2 }) }),
  fc.record({ op: fc.constant('remove' as const), pick: fc.nat() }),
  fc.record({ op: fc.constant('want' as const), pick: fc.nat(), want: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ op: fc.constant('notify' as const), tasks: fc.array(fc.tuple(fc.nat({ max: KEYS.length - 1 }), fc.integer({ min: 1, max: 3 })), { minLength: 1, maxLength: 3 }) }),
);

interface TestWaiter {
  agentId: string;
  capabilities: Set<string>;
  namespace: string;
  wanted: number;
  wakes: WakeReason[];
  want(): number;
  wake(reason?: WakeReason): void;
  remove(): void;
}

describe('ClaimWaiters, properties', () => {
  it('never leaves a waiter able to do announced tasks asleep while some of them are counted for nobody', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), (ops) => {
        const waiters = new ClaimWaiters();
        const registered: TestWaiter[] = [];
        let next = 0;
        for (const step of ops) {
          if (step.op === 'add') {
            const agentId = `w${next++}`;
            const capabilities = new Set([...step.capabilities, `agent:${agentId}`, ...(step.namespace === 'default' ? [] : [`namespace:${step.namespace}`])]);
            const w: TestWaiter = { agentId, capabilities, namespace: step.namespace, wanted: step.want, wakes: [], want: () => w.wanted, wake: (r) => void (r && w.wakes.push(r)), remove: () => {} };
            w.remove = waiters.add(w);
            registered.push(w);
          } else if (registered.length === 0) {
            continue;
          } else if (step.op === 'remove') {
            registered.splice(step.pick % registered.length, 1)[0].remove();
          } else if (step.op === 'want') {
            const w = registered[step.pick % registered.length];
            const rose = step.want > w.wanted;
            w.wanted = step.want;
            if (rose) waiters.mayWant(w);
          } else {
            const announced: Record<string, number> = {};
            for (const [k, n] of step.tasks) announced[KEYS[k]] = (announced[KEYS[k]] ?? 0) + n;
            for (const w of registered) w.wakes = [];
            waiters.notify(announced);
            for (const w of registered) {
              assert.ok(w.wakes.length <= 1, `${w.agentId} woken twice in one notification`);
              for (const r of w.wakes) assert.ok(r.count >= 1 && r.count <= w.wanted, `${w.agentId} counted for ${r.count}, wanting ${w.wanted}`);
            }
            for (const [key, count] of Object.entries(announced)) {
              const counted = registered.flatMap((w) => w.wakes).filter((r) => r.key === key).reduce((n, r) => n + r.count, 0);
              assert.ok(counted <= count, `${JSON.stringify(key)}: ${counted} counted of ${count}`);
              if (counted === count) continue;
              const asleep = registered.filter((w) => w.wakes.length === 0 && w.wanted > 0 && canClaim(key, w.capabilities, w.namespace));
              assert.deepEqual(asleep.map((w) => w.agentId), [], `${JSON.stringify(key)}: ${count - counted} counted for nobody`);
            }
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
