import { useEffect, useState } from 'preact/hooks';
import { get } from '../api.js';
import { ago, time } from '../format.js';
import { useLiveData } from '../hooks.js';
import { useNamespaces } from '../namespaces.js';
import type { TaskType, TaskTypeDetail } from '../types.js';
import type { ViewProps } from './view.js';

const RELOAD_MS = 3_000;

/** A policy in a few words: what limits the type. */
function policyText(t: TaskType): string {
  const p = t.policy;
  if (!p) return 'no limits';
  const parts: string[] = [];
  if (p.maxConcurrency !== null) parts.push(`≤ ${p.maxConcurrency} at once`);
  if (p.maxConcurrencyPerKey !== null) parts.push(`≤ ${p.maxConcurrencyPerKey} per key`);
  if (p.rateLimit) parts.push(`${p.rateLimit.count} per ${p.rateLimit.perMs} ms${p.rateLimit.perKey ? ' per key' : ''}`);
  if (p.budget?.tokensPerHour) parts.push(`${p.budget.tokensPerHour} tokens/h${p.budget.perKey ? ' per key' : ''}`);
  if (p.budget?.costPerDay) parts.push(`$${p.budget.costPerDay}/day${p.budget.perKey ? ' per key' : ''}`);
  const weighted = Object.keys(p.keyWeights).length;
  if (weighted > 0) parts.push(`${weighted} weighted key${weighted === 1 ? '' : 's'}`);
  return parts.length > 0 ? parts.join(', ') : 'no limits';
}

/** What holds the type's queued tasks back, by reason. */
function heldText(t: TaskType): string {
  const reasons = (['paused', 'maxConcurrency', 'maxConcurrencyPerKey', 'rateLimit', 'budget'] as const).filter((r) => t.heldBack[r] > 0);
  return reasons.length === 0 ? '—' : reasons.map((r) => `${t.heldBack[r]} by ${r}`).join(', ');
}

type Spent = TaskTypeDetail['usage']['hour'];
const tokens = (u: Spent) => u.inputTokens + u.outputTokens;
const dollars = (n: number) => `$${n.toFixed(n < 1 ? 4 : 2).replace(/0+$/, '').replace(/\.$/, '')}`;

/**
 * Why a spent budget holds tasks back: what was spent against what the budget allows, for the
 * whole type or for each key it holds back (most 5), from the type's detail.
 */
export function budgetWhy(d: TaskTypeDetail): string[] {
  const budget = d.policy?.budget;
  if (!budget || d.heldBack.budget === 0) return [];
  const spent = (hour: Spent, day: Spent) => {
    const over: string[] = [];
    if (budget.tokensPerHour !== null && tokens(hour) >= budget.tokensPerHour) {
      over.push(`${tokens(hour).toLocaleString('en')} of ${budget.tokensPerHour.toLocaleString('en')} tokens in the last hour`);
    }
    if (budget.costPerDay !== null && day.costUsd >= budget.costPerDay) over.push(`${dollars(day.costUsd)} of ${dollars(budget.costPerDay)} in the last day`);
    return over.join(', ');
  };
  if (!budget.perKey) return [`budget spent: ${spent(d.usage.hour, d.usage.day)}`];
  const held = d.keys.filter((k) => k.heldBy === 'budget');
  const lines = held.slice(0, 5).map((k) => {
    const u = d.usage.keys.find((x) => (x.key ?? '') === (k.key ?? ''));
    return `key ${k.key ?? '(none)'} spent ${u ? spent(u.hour, u.day) : 'its budget'}`;
  });
  if (held.length > 5) lines.push(`and ${held.length - 5} more keys`);
  return lines;
}

/** A type is its namespace's: the same name in two namespaces is two rows. */
const typeId = (t: { namespace: string; type: string }) => `${t.namespace}/${t.type}`;

/** Task types: their policies, whether they are paused, and how many queued tasks each limit holds back. */
export default function Types(_props: ViewProps) {
  const { column: namespaceColumn } = useNamespaces();
  const [types, setTypes] = useState<TaskType[] | null>(null);
  const [why, setWhy] = useState<Record<string, string[]>>({});
  const [error, setError] = useState('');

  const load = async () => {
    try {
      const items = (await get<{ items: TaskType[] }>('/v1/types')).items;
      // A type a spent budget holds back says what was spent: its detail has the usage (few such types).
      const budgeted = items.filter((t) => t.heldBack.budget > 0).slice(0, 20);
      const details = await Promise.all(
        budgeted.map((t) => get<TaskTypeDetail>(`/v1/types/${encodeURIComponent(t.type)}?namespace=${encodeURIComponent(t.namespace)}`)),
      );
      setWhy(Object.fromEntries(details.map((d) => [typeId(d), budgetWhy(d)])));
      setTypes(items);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    }
  };
  useLiveData({ load, intervalMs: 2_000, topics: ['tasks'] }, []);
  // Policies and pauses change without a task event, and held-back counts move with time (rate
  // windows, pauses that end): the page also reloads on a timer.
  useEffect(() => {
    const timer = setInterval(() => void load(), RELOAD_MS);
    return () => clearInterval(timer);
  }, []);

  return (
    <div data-ready={types ? 'types' : undefined}>
      {error && <p class="error">{error}</p>}
      <table class="data">
        <thead>
          <tr>{namespaceColumn && <th>namespace</th>}<th>type</th><th>policy</th><th>queued</th><th>leased</th><th>held back</th><th>paused</th></tr>
        </thead>
        <tbody>
          {(types ?? []).map((t) => (
            <tr key={typeId(t)} data-type={t.type} data-namespace={t.namespace}>
              {namespaceColumn && <td>{t.namespace}</td>}
              <td class="mono"><a href={`#/tasks?type=${encodeURIComponent(t.type)}`}>{t.type}</a></td>
              <td data-field="policy">{policyText(t)}</td>
              <td>{t.counts.queued}</td>
              <td>{t.counts.leased}</td>
              <td data-field="held">
                {heldText(t)}
                {(why[typeId(t)] ?? []).map((line) => (
                  <div key={line} class="muted" data-field="budget">{line}</div>
                ))}
              </td>
              <td data-field="paused">
                {t.pauses.length === 0
                  ? '—'
                  : t.pauses.map((p) => (
                      <div key={p.key ?? ''} title={p.reason ?? ''}>
                        {p.key === null ? 'whole type' : `key ${p.key}`}
                        {p.until ? <span title={time(p.until)}> until {ago(p.until)}</span> : ' until resumed'}
                        {p.reason ? ` (${p.reason})` : ''}
                      </div>
                    ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {types?.length === 0 && <p class="muted">No task types yet.</p>}
    </div>
  );
}
