import type { Fleet } from '../../core/fleet.js';
import type { Task } from '../../domain/types.js';
import { render } from '../template.js';
import type { StepContext } from '../definition.js';
import { StepError } from './step.js';

/**
 * Dispatches a task to agents with the step's capability and waits for its result: this is how the
 * fleet takes part in a pipeline. The task's idempotency key is the run, step and attempt, so a
 * restarted server resuming the step finds the task it already dispatched instead of sending another.
 */
export async function runAgentStep(ctx: StepContext, fleet: Fleet, outcomes: TaskOutcomes): Promise<unknown> {
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
    // The run's namespace's agents do its work, whichever node drives it.
    namespace: ctx.run.namespace,
  });
  const done = await outcomes.wait(task.id, ctx.signal);
  if (done.status === 'completed') return done.result;
  throw new StepError(`task ${done.id} ended ${done.status}`, done.status === 'dead', undefined, { taskId: done.id, error: done.error });
}

/**
 * Agent steps waiting for their tasks to end. One bus subscription per event serves them all,
 * looked up by task id, so a thousand waiting steps cost a map entry each, not a thousand handlers
 * called on every task event.
 */
export class TaskOutcomes {
  private readonly waiting = new Map<number, Set<() => void>>();
  private offs: (() => void)[] = [];

  constructor(private readonly fleet: Fleet) {}

  /** Resolves with the task once it is completed, dead or cancelled. */
  wait(id: number, signal: AbortSignal): Promise<Task> {
    if (this.offs.length === 0) this.subscribe();
    return new Promise<Task>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        const set = this.waiting.get(id);
        set?.delete(check);
        if (set?.size === 0) this.waiting.delete(id);
        signal.removeEventListener('abort', onAbort);
        fn();
      };
      // Reads the task after registering, so that an end already past is not missed.
      const check = () => {
        this.fleet.tasks.get(id).then(
          (t) => {
            if (t.status === 'completed' || t.status === 'dead' || t.status === 'cancelled') settle(() => resolve(t));
          },
          (err) => settle(() => reject(err)),
        );
      };
      const onAbort = () => settle(() => reject(signal.reason));
      let set = this.waiting.get(id);
      if (!set) this.waiting.set(id, (set = new Set()));
      set.add(check);
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort();
      else check();
    });
  }

  close(): void {
    for (const off of this.offs) off();
    this.offs = [];
  }

  private subscribe(): void {
    for (const name of ['task.completed', 'task.dead', 'task.cancelled'] as const) {
      this.offs.push(
        this.fleet.bus.subscribe(name, (e) => {
          for (const check of this.waiting.get(e.task.id) ?? []) check();
        }),
      );
    }
  }
}
