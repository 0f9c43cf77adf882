import { invalid } from '../../domain/errors.js';
import type { TaskStatus } from '../../domain/types.js';
import type { LinkCheck, TaskLinks } from '../../store/store.js';
import { initialStatus } from './tasks.js';

/** Most tasks one task may depend on. */
export const MAX_DEPENDENCIES = 1_000;

const FAILED: ReadonlySet<TaskStatus> = new Set(['dead', 'cancelled']);

/**
 * The rule for a new task with a parent or dependencies, which a store applies inside its insert
 * to what it found of them (see `LinkCheck`). A parent or dependency that does not exist refuses
 * the batch: a task can depend only on tasks that exist before it, so no cycle can form. The first
 * status: cancelled when a dependency has failed already and the task does not run on failures;
 * waiting while any dependency is unfinished; otherwise queued, or scheduled when runAt lies ahead.
 *
 * What happens later, as dependencies finish, is decided here too and carried by the row as data:
 * `on_dependency_failure` says whether a failed dependency cancels the waiting task, and a task
 * whose last dependency finished is released as a new task would start (`initialStatus`, by its
 * runAt). Drivers apply that in the transaction that finishes the dependency.
 */
export function linkCheck(items: { links?: TaskLinks; runAt: number }[], now: number): LinkCheck {
  return ({ index, parentFound, dependencies }) => {
    const { links, runAt } = items[index];
    const at = items.length > 1 ? { index } : {};
    if (!links) throw new Error(`task ${index} of the batch has no links`);
    if (links.parentId !== null && !parentFound) {
      throw invalid('parentId', `task ${links.parentId} does not exist`, { ...at, parentId: links.parentId });
    }
    const found = new Map(dependencies.map((d) => [Number(d.id), d.status]));
    const missing = links.dependsOn.filter((id) => !found.has(id));
    if (missing.length > 0) {
      throw invalid('dependsOn', `${missing.length === 1 ? 'task' : 'tasks'} ${missing.slice(0, 10).join(', ')} ${missing.length === 1 ? 'does' : 'do'} not exist`, {
        ...at,
        missing: missing.slice(0, 100),
      });
    }
    const statuses = [...found.values()];
    const pending = statuses.filter((s) => s !== 'completed' && !FAILED.has(s)).length;
    if (links.onDependencyFailure === 'cancel' && statuses.some((s) => FAILED.has(s))) return { status: 'cancelled', pending };
    if (pending > 0) return { status: 'waiting', pending };
    return { status: initialStatus(runAt, now), pending };
  };
}

/** The dependencies as submitted, checked before anything is read: distinct ids, at most MAX_DEPENDENCIES. */
export function checkDependsOn(dependsOn: number[] | undefined, at: Record<string, unknown>): number[] {
  if (dependsOn === undefined) return [];
  if (dependsOn.length > MAX_DEPENDENCIES) {
    throw invalid('dependsOn', `a task may depend on at most ${MAX_DEPENDENCIES} tasks`, { ...at, count: dependsOn.length });
  }
  for (const id of dependsOn) {
    if (!Number.isSafeInteger(id) || id < 1) throw invalid('dependsOn', `${id} is not a task id`, at);
  }
  return [...new Set(dependsOn)];
}
