import type { ActivityEntry, ActivityInput, ActivityTail, LogLevel } from '../domain/activity.js';
import { FleetError, invalid, notFound } from '../domain/errors.js';
import type { Task } from '../domain/types.js';
import type { FleetContext } from './context.js';
import { activityRefused, entrySize, retainedFloor } from './rules/activity.js';

/** A log line as an agent sends it. */
export interface LogLine {
  level?: LogLevel;
  message: string;
}

const tooLarge = (field: string, bytes: number, limit: number, setting: string) =>
  new FleetError('FLEETD_ERR_ENTRY_TOO_LARGE', `${field} is ${bytes} bytes; the limit is ${limit} (${setting})`, { field, bytes, limit });

/**
 * What agents report on the tasks they hold while they run (progress, log lines, output), kept as a
 * bounded tail per task in the store and announced on the bus as `task.activity`.
 */
export class ActivityService {
  constructor(private readonly ctx: FleetContext) {}

  progress(params: { id: number; agentId: string; progress: number; message?: string }): Promise<ActivityEntry[]> {
    if (!Number.isFinite(params.progress) || params.progress < 0 || params.progress > 1) {
      throw invalid('progress', 'must be a number from 0 to 1', { progress: params.progress });
    }
    const message = params.message ?? null;
    if (message !== null) this.checkLine('message', message);
    return this.append(params.id, params.agentId, [{ kind: 'progress', progress: params.progress, message }]);
  }

  logs(params: { id: number; agentId: string; lines: LogLine[] }): Promise<ActivityEntry[]> {
    if (params.lines.length === 0) throw invalid('lines', 'must hold at least one line');
    params.lines.forEach((line, i) => this.checkLine(`lines[${i}].message`, line.message));
    return this.append(
      params.id,
      params.agentId,
      params.lines.map((line) => ({ kind: 'log', level: line.level ?? 'info', message: line.message })),
    );
  }

  output(params: { id: number; agentId: string; text: string }): Promise<ActivityEntry[]> {
    if (params.text.length === 0) throw invalid('text', 'must not be empty');
    const bytes = Buffer.byteLength(params.text, 'utf8');
    const limit = this.ctx.config.taskOutputChunkMaxBytes;
    if (bytes > limit) throw tooLarge('text', bytes, limit, 'FLEETD_TASK_OUTPUT_CHUNK_MAX_BYTES');
    return this.append(params.id, params.agentId, [{ kind: 'output', text: params.text }]);
  }

  /** The task and what is retained of its activity after `since` (404 for a task that does not exist). */
  async read(params: { id: number; since?: number; limit: number }): Promise<{ task: Task; tail: ActivityTail }> {
    const task = await this.ctx.store.taskGet({ id: params.id });
    if (!task) throw notFound('task', params.id);
    const tail = await this.tail({ id: params.id, since: params.since ?? 0, limit: params.limit });
    return { task, tail };
  }

  /** What is retained of the task's activity after `since`, without the task (a stream catching up). */
  tail(params: { id: number; since: number; limit: number }): Promise<ActivityTail> {
    return this.ctx.store.taskActivityRead(params);
  }

  private checkLine(field: string, message: string): void {
    const limit = this.ctx.config.taskLogLineMaxBytes;
    // Counting UTF-8 bytes costs a pass over the text; a string this short cannot be over the limit.
    if (message.length * 3 <= limit) return;
    const bytes = Buffer.byteLength(message, 'utf8');
    if (bytes > limit) throw tooLarge(field, bytes, limit, 'FLEETD_TASK_LOG_LINE_MAX_BYTES');
  }

  private async append(id: number, agentId: string, inputs: ActivityInput[]): Promise<ActivityEntry[]> {
    const bounds = { logLines: this.ctx.config.taskLogMaxLines, outputBytes: this.ctx.config.taskOutputMaxBytes };
    const written = await this.ctx.store.taskActivityAppend({
      id,
      agentId,
      entries: inputs.map((entry) => ({ entry, size: entrySize(entry) })),
      now: this.ctx.now(),
      floor: (totals) => retainedFloor(totals, bounds),
    });
    if (!written.entries) {
      // A refusal reads the agent: a task of another namespace than its own is as missing.
      const agent = written.current && (await this.ctx.store.agentGet({ id: agentId }));
      if (agent && agent.namespace !== written.current!.namespace) throw notFound('task', id);
      throw activityRefused(written.current, id, agentId);
    }
    this.ctx.bus.publish('task.activity', { taskId: id, namespace: written.namespace, entries: written.entries });
    return written.entries;
  }
}
