/**
 * `npm run bench -- waiters [--busy 10000] [--notifications 20000] [--rounds 3]`
 *
 * The claim waiters alone, in this process: what one notification of a new task costs while a
 * fleet of `--busy` push channels is busy (each was idle in the line, then took a task and has no
 * credit left), against the same with no channel at all, in the same run. A saturated fleet
 * with a backlog is notified at every task submitted; src/core/claim-waiters.ts keeps the busy out
 * of the line that a notification walks. µs per notification, median over the rounds.
 */
import { ClaimWaiters, type ClaimWaiter } from '../../src/core/claim-waiters.js';
import { requirementKey } from '../../src/domain/requirements.js';
import { flags, report } from '../lib.js';

const key = requirementKey(['bench']);

/** A waiter shaped like a push channel's: what it wants is its credit, read through its state. */
function channelLike(i: number): { waiter: ClaimWaiter; spend(): void } {
  const state = { closed: false, full: false, credit: 1, asked: 0 };
  return {
    waiter: {
      agentId: `agent-${i}`,
      capabilities: new Set(['bench', `agent:agent-${i}`]),
      namespace: 'default',
      want: () => (state.closed || state.full ? 0 : state.credit - state.asked),
      wake: () => {},
    },
    spend: () => void (state.credit = 0),
  };
}

function perNotification(busy: number, notifications: number): number {
  const waiters = new ClaimWaiters();
  for (let i = 0; i < busy; i++) {
    const channel = channelLike(i);
    waiters.add(channel.waiter);
    channel.spend();
  }
  const started = process.hrtime.bigint();
  for (let n = 0; n < notifications; n++) waiters.notify({ [key]: 1 });
  return Number(process.hrtime.bigint() - started) / 1000 / notifications;
}

export default async function waitersScenario(args: string[]): Promise<void> {
  const f = flags(args, { busy: 10_000, notifications: 20_000, rounds: 3 });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const none: number[] = [];
  const busy: number[] = [];
  for (let round = 0; round < f.rounds; round++) {
    none.push(perNotification(0, f.notifications));
    busy.push(perNotification(f.busy, f.notifications));
  }
  const round2 = (v: number) => Math.round(v * 1000) / 1000;
  report(
    'waiters',
    [
      { fleet: 'no channel', 'µs per notification': round2(median(none)) },
      { fleet: `${f.busy} busy channels`, 'µs per notification': round2(median(busy)) },
      { fleet: 'busy ÷ none', 'µs per notification': Math.round((median(busy) / median(none)) * 100) / 100 },
    ],
    { flags: f },
  );
}
