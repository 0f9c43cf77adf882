import type { Bus, EventName, FleetEvents } from '../bus/bus.js';
import type { ResponseCache } from './response-cache.js';

/**
 * What each event makes stale. A task's own entry carries `task:<id>`; every task list carries
 * `tasks`; likewise `lock:<id>` / `locks` and `agent:<id>` / `agents`. Events are published after
 * commit and before the write is answered, so an acknowledged write has already invalidated.
 */
export function tagsOf<K extends EventName>(name: K, event: FleetEvents[K]): string[] {
  const e = event as Partial<FleetEvents['task.created'] & FleetEvents['lock.acquired'] & FleetEvents['agent.registered']>;
  if (e.task) return [`task:${e.task.id}`, 'tasks'];
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
