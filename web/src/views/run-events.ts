import type { LiveEvent, PipelineRun, StepState } from '../types.js';

/**
 * A run as it is after one of its events (`pipeline.*` of the observer stream):
 * its status, and the step the event names. Outputs are not in events; views load them. An event
 * published before the run's last change is older than what the run shows, and changes nothing.
 */
export function applyRunEvent(run: PipelineRun, e: LiveEvent): PipelineRun {
  if (!('run' in e.data) || e.data.run.id !== run.id || Date.parse(e.at) < Date.parse(run.updatedAt)) return run;
  const at = e.at;
  const { step, attempt, willRetry, error } = e.data as { step?: string; attempt?: number; willRetry?: boolean; error?: unknown };
  const steps = run.steps.map((s): StepState => {
    if (s.name !== step) return s;
    switch (e.name) {
      case 'pipeline.step.started':
        return { ...s, status: 'running', attempts: attempt ?? s.attempts, startedAt: at, finishedAt: null, nextAttemptAt: null };
      case 'pipeline.step.waiting':
        return { ...s, status: 'waiting', attempts: attempt ?? s.attempts, startedAt: s.startedAt ?? at, finishedAt: null, nextAttemptAt: null };
      case 'pipeline.step.completed':
        return { ...s, status: 'completed', finishedAt: at };
      case 'pipeline.step.failed':
        return willRetry ? { ...s, status: 'pending', error } : { ...s, status: 'failed', error, finishedAt: at };
      default:
        return s;
    }
  });
  const finished = e.name === 'pipeline.run.finished';
  return { ...run, status: e.data.run.status, updatedAt: at, finishedAt: finished ? at : run.finishedAt, steps };
}
