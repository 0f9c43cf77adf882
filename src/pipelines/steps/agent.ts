import type { Fleet } from '../../core/fleet.js';
import type { Task } from '../../core/types.js';
import { render } from '../template.js';
import { StepError, type StepContext } from './step.js';

/**
 * Dispatches a task to agents with the step's capability and waits for its result: this is how the
 * fleet takes part in a pipeline. The task's idempotency key is the run, step and attempt, so a
 * restarted server resuming the step finds the task it already dispatched instead of sending another.
 */
export async function runAgentStep(ctx: StepContext, fleet: Fleet): Promise<unknown> {
  const step = ctx.step;
  if (step.kind !== 'agent') throw new Error('not an agent step');
  const { task } = await fleet.tasks.submit({
    type: step.type ?? step.capability,
    requires: [step.capability],
    payload: step.payload === undefined ? { input: ctx.input, steps: ctx.steps } : render(step.payload, ctx),
    priority: step.priority,
    leaseMs: step.leaseMs,
    maxAttempts: step.taskAttempts,
    idempotencyKey: `pipeline-run:${ctx.run.id}:${step.name}:${ctx.attempt}`,
  });
  const done = await finished(fleet, task.id, ctx.signal);
  if (done.status === 'completed') return done.result;
  throw new StepError(`task ${done.id} ended ${done.status}`, done.status === 'dead', undefined, { taskId: done.id, error: done.error });
}

/** Waits for the task to end, on the bus's events; reads it once after subscribing so that an end already past is not missed. */
function finished(fleet: Fleet, id: number, signal: AbortSignal): Promise<Task> {
  return new Promise<Task>((resolve, reject) => {
    let settled = false;
    const offs: (() => void)[] = [];
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      for (const off of offs) off();
      signal.removeEventListener('abort', onAbort);
      fn();
    };
    const check = () => {
      fleet.tasks.get(id).then(
        (t) => {
          if (t.status === 'completed' || t.status === 'dead' || t.status === 'cancelled') settle(() => resolve(t));
        },
        (err) => settle(() => reject(err)),
      );
    };
    const onAbort = () => settle(() => reject(signal.reason));
    for (const name of ['task.completed', 'task.dead', 'task.cancelled'] as const) {
      offs.push(fleet.bus.subscribe(name, (e) => e.task.id === id && check()));
    }
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    else check();
  });
}
