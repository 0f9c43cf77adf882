/**
 * `npm run bench -- waiters [--agents 10000] [--notifications 20000] [--rounds 3]`
 *
 * The claim waiters alone, in this process: what one notification of a new task costs, against
 * the same with no channel at all, in the same run, when
 * - a fleet of `--agents` push channels is busy (each was idle in the line, then took a task and
 *   has no credit left): a saturated fleet with a backlog is notified at every task submitted;
 * - `--agents` channels are idle, but none can do the task (GPU tasks, the GPU agents busy);
 * - `--agents` channels are idle, and each task is pinned to one of them (`agentId`), in turn.
 * src/core/claim-waiters.ts keeps the busy out of the line that a notification walks, looks for a
 * task among the waiters holding its requirements, and remembers a requirement that nobody in the
 * line can do. µs per notification, median over the rounds.
 */
import { ClaimWaiters, type ClaimWaiter } from '../../src/core/claim-waiters.js';
import { requirementKey } from '../../src/domain/requirements.js';
import { flags, percentile, report } from '../lib.js';

const key = requirementKey(['bench']);

/** A waiter shaped like a push channel's: what it wants is its credit, read through its state. */
function channelLike(i: number, capability: string): { waiter: ClaimWaiter; spend(): void } {
  const state = { closed: false, full: false, credit: 1, asked: 0 };
  return {
    waiter: {
      agentId: `agent-${i}`,
      capabilities: new Set([capability, `agent:agent-${i}`]),
      namespace: 'default',
      want: () => (state.closed || state.full ? 0 : state.credit - state.asked),
      wake: () => {},
    },
    spend: () => void (state.credit = 0),
  };
}

type Fleet = 'none' | 'busy' | 'other' | 'pinned';

function perNotification(fleet: Fleet, agents: number, notifications: number): number {
  const waiters = new ClaimWaiters();
  for (let i = 0; fleet !== 'none' && i < agents; i++) {
    const channel = channelLike(i, fleet === 'other' ? 'other' : 'bench');
    waiters.add(channel.waiter);
    if (fleet === 'busy') channel.spend();
  }
  // Pinned: to agents spread over the line, each of which stays idle (its wake-up claims nothing here).
  const pinned = Array.from({ length: 1_000 }, (_, n) => requirementKey([`agent:agent-${(n * 7_919) % Math.max(1, agents)}`]));
  const started = process.hrtime.bigint();
  if (fleet === 'pinned') for (let n = 0; n < notifications; n++) waiters.notify({ [pinned[n % pinned.length]]: 1 });
  else for (let n = 0; n < notifications; n++) waiters.notify({ [key]: 1 });
  return Number(process.hrtime.bigint() - started) / 1000 / notifications;
}

export default async function waitersScenario(args: string[]): Promise<void> {
  const f = flags(args, { agents: 10_000, notifications: 20_000, rounds: 3 });
  const median = (xs: number[]) => percentile(xs, 50);
  const us: Record<Fleet, number[]> = { none: [], busy: [], other: [], pinned: [] };
  for (let round = 0; round < f.rounds; round++) {
    for (const fleet of ['none', 'busy', 'other', 'pinned'] as const) us[fleet].push(perNotification(fleet, f.agents, f.notifications));
  }
  const none = median(us.none);
  const row = (fleet: string, v: number) => ({ fleet, 'µs per notification': Math.round(v * 1000) / 1000, '÷ no channel': Math.round((v / none) * 100) / 100 });
  report(
    'waiters',
    [
      row('no channel', none),
      row(`${f.agents} busy channels`, median(us.busy)),
      row(`${f.agents} idle channels that cannot do the task`, median(us.other)),
      row(`${f.agents} idle channels, the task pinned to one`, median(us.pinned)),
    ],
    { flags: f },
  );
}
