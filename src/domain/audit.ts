/**
 * The audit log: who did what administrative or destructive act, when, to what, and from where.
 * Actions are named `<thing>.<what happened>`; the catalogue below is every action fleetd records,
 * so that a filter can be checked and a reader knows what to expect.
 */
export const AUDIT_ACTIONS = [
  'key.created',
  'key.rotated',
  'key.revoked',
  'task.cancelled',
  'task.retried',
  'agent.removed',
  'lock.released',
  'pipeline.run.cancelled',
  'tasks.bulk',
  'pipeline.defined',
  'pipeline.deleted',
  'pipeline.step.approved',
  'pipeline.step.rejected',
  'schedule.created',
  'schedule.deleted',
  'namespace.updated',
] as const;

export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditEntry {
  id: number;
  /** Epoch ms. */
  at: number;
  /** Who: `key:<id>`, `agent:<id>`, `cli` (npx fleetd keys on the server), or `anonymous` (auth off). */
  actor: string;
  /** From where: the client's address; null when not over the network (the CLI). */
  address: string | null;
  action: AuditAction;
  /** What it was done to, as `<kind>:<id>`, e.g. `task:42`, `key:key_3f…`. */
  target: string;
  /** What else the act says: a key's name and scope, a task's type, a grace period. */
  details: Record<string, unknown>;
}

/** What a caller records; the id and, unless given, the time are the log's. */
export type AuditRecord = Omit<AuditEntry, 'id' | 'at' | 'address'> & { at?: number; address?: string | null };
