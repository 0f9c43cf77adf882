import type { Principal } from '../core/credentials.js';
import type { ApprovalDecision, Approvers, Decider } from '../domain/runs.js';

/**
 * Who is asking to decide an approval, as the API knows them: an API key (its id, name and scope),
 * an agent (its id and name), or nobody in particular when authentication is off.
 */
export type Asker =
  | { kind: 'key'; id: string; name: string; scope: Extract<Principal, { kind: 'key' }>['scope'] }
  | { kind: 'agent'; id: string; name: string }
  | { kind: 'anonymous' };

/**
 * Whether `asker` may decide an approval step with these approvers. An admin key always may; a
 * step that names nobody may be decided by any submit key; one that names keys or agents (by name
 * or id) by those only, and by no other submit key. Agents decide only where they are named.
 * With authentication off there is nobody to tell apart, and anyone may.
 */
export function mayDecide(approvers: Approvers | null, asker: Asker): boolean {
  if (asker.kind === 'anonymous') return true;
  if (asker.kind === 'key') {
    if (asker.scope === 'admin') return true;
    if (asker.scope !== 'submit') return false;
    return approvers === null || (approvers.keys ?? []).some((n) => n === asker.name || n === asker.id);
  }
  return approvers !== null && (approvers.agents ?? []).some((n) => n === asker.name || n === asker.id);
}

export const deciderOf = (asker: Asker): Decider => (asker.kind === 'anonymous' ? { kind: 'anonymous' } : { kind: asker.kind, id: asker.id, name: asker.name });

/** The step's output once decided (and, when rejected, its error too). */
export function decision(approved: boolean, by: Decider, comment: string | null, now: number): ApprovalDecision {
  return { decision: approved ? 'approved' : 'rejected', by, comment, decidedAt: new Date(now).toISOString() };
}
