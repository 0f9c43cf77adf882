import type { Bus, EventName, FleetEvents } from '../bus/bus.js';
import type { ResponseCache } from './response-cache.js';

/**
 * Events that change a finished task. A task's own entry is cached only once it has finished
 * (routes/tasks.ts): the rest of its events (created, claimed, completed…) cannot find one, and
 * invalidating its tag on every node and in Redis for each of them cost a node of two a Redis key
 * a task.
 */
const FINISHED_TASK_CHANGES: ReadonlySet<EventName> = new Set<EventName>(['task.retried', 'task.deleted']);

/**
 * What each event makes stale. A finished task's own entry carries `task:<id>`; every task list
 * carries `tasks`; likewise `lock:<id>` / `locks` and `agent:<id>` / `agents`. Events are published
 * after commit and before the write is answered, so an acknowledged write has already invalidated.
 */
export function tagsOf<K extends EventName>(name: K, event: FleetEvents[K]): string[] {
  const e = event as Partial<FleetEvents['task.created'] & FleetEvents['lock.acquired'] & FleetEvents['agent.registered']>;
  if (e.task) return FINISHED_TASK_CHANGES.has(name) ? [`task:${e.task.id}`, 'tasks'] : ['tasks'];
  // Tasks became claimable without an event of their own (a delay ran out): lists changed.
  if (name === 'tasks.available') return ['tasks'];
  if (e.lock) return [`lock:${e.lock.id}`, 'locks'];
  if (e.agent) return [`agent:${e.agent.id}`, 'agents'];
  if (name === 'agent.stale') return [`agent:${(event as FleetEvents['agent.stale']).agentId}`, 'agents'];
  return [];
}

/**
 * Invalidates the cache on every event; returns the function that stops it. An event relayed from
 * another node was invalidated cluster-wide by that node already: here it only drops local copies.
 */
export function invalidateOnEvents(bus: Bus, cache: ResponseCache): () => void {
  return bus.subscribeAll((name, event) => {
    const tags = tagsOf(name, event);
    if (tags.length > 0) cache.invalidate(tags, bus.relaying ? 'node' : 'cluster');
  });
}
