import { DEFAULT_NAMESPACE, type NamespaceFilter } from '../domain/namespaces.js';
import type { RunListParams } from './pipeline-store.js';
import type { CaseRow, RunRow } from './pipeline-rows.js';
import { WITHOUT_VALUE, type KeysetQuery } from './keyset.js';
import type { AgentRow, LockRow, ScheduleRow, TaskRow } from './rows.js';
import type { ScheduleListParams } from './schedule-store.js';
import type { AgentListParams, LockListParams, TaskListParams } from './store.js';

/**
 * Every list a driver answers, as one keyset query each (see keyset.ts): its filters, its order
 * and the key its pages follow. The same SQL in both dialects; a driver only runs it.
 */
export const taskList = (p: TaskListParams): KeysetQuery<TaskRow> => ({
  select: 'SELECT * FROM tasks',
  where: [
    ['namespace IN (?)', p.namespaces],
    // Names the partial index of the tasks outside default (tasks_outside_default), so that a list
    // of a small namespace does not read a large default's tasks in id order to fill its page.
    ["namespace <> 'default'", p.namespaces && !p.namespaces.includes(DEFAULT_NAMESPACE) ? WITHOUT_VALUE : undefined],
    ['status = ?', p.status],
    ['type = ?', p.type],
    ['agent_id = ?', p.agentId],
    ['id IN (SELECT task_id FROM task_tags WHERE tag = ?)', p.tag],
    ['parent_id = ?', p.parentId],
  ],
  key: 'id',
  keyOf: (r) => r.id,
  order: p.order ?? 'desc',
  cursor: p.cursor,
  limit: p.limit,
});

/**
 * Agents oldest first. Searching by capability is the one thing the dialects do differently
 * (SQLite joins its agent_capabilities table, PostgreSQL tests its text[] column), so the driver
 * gives the FROM clause and the condition for it.
 */
export const agentList = (p: AgentListParams, byCapability: { from: string; condition: string }): KeysetQuery<AgentRow> => ({
  select: `SELECT a.* FROM ${p.capability === undefined ? 'agents a' : byCapability.from}`,
  where: [
    [byCapability.condition, p.capability],
    ['a.namespace IN (?)', p.namespaces],
    ['a.status = ?', p.status],
  ],
  key: 'a.seq',
  keyOf: (r) => r.seq,
  order: 'asc',
  cursor: p.cursor,
  limit: p.limit,
});

export const lockList = (p: LockListParams): KeysetQuery<LockRow> => ({
  select: 'SELECT * FROM locks',
  where: [
    ['namespace IN (?)', p.namespaces],
    ['agent_id = ?', p.agentId],
  ],
  key: 'seq',
  keyOf: (r) => r.seq,
  order: 'asc',
  cursor: p.cursor,
  limit: p.limit,
});

/** Newest first. */
export const runList = (p: RunListParams): KeysetQuery<RunRow> => ({
  select: 'SELECT * FROM pipeline_runs',
  where: [
    ['namespace IN (?)', p.namespaces],
    ['pipeline = ?', p.pipeline],
    ['status = ?', p.status],
  ],
  key: 'id',
  keyOf: (r) => r.id,
  order: 'desc',
  cursor: p.cursor,
  limit: p.limit,
});

/** Newest first. */
export const caseList = (p: { namespaces?: NamespaceFilter; limit: number; cursor?: string }): KeysetQuery<CaseRow> => ({
  select: 'SELECT * FROM cases',
  where: [['namespace IN (?)', p.namespaces]],
  key: 'id',
  keyOf: (r) => r.id,
  order: 'desc',
  cursor: p.cursor,
  limit: p.limit,
});

/** Oldest first. */
export const scheduleList = (p: ScheduleListParams): KeysetQuery<ScheduleRow> => ({
  select: 'SELECT * FROM schedules',
  where: [['namespace IN (?)', p.namespaces]],
  key: 'seq',
  keyOf: (r) => Number(r.seq),
  order: 'asc',
  cursor: p.cursor,
  limit: p.limit,
});
