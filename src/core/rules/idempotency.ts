import { createHash } from 'node:crypto';
import { FleetError } from '../../domain/errors.js';
import { requirementKey } from '../../domain/requirements.js';
import type { RepeatCheck } from '../../store/store.js';

/**
 * What a task's idempotency key is bound to: a second submit with the key must describe the same task.
 * `payloadJson`, the payload's JSON text where the caller has it already, is hashed as it is: the text
 * hashed is JSON.stringify's of the array either way, so keys stored before keep their hashes.
 */
export function taskRequestHash(t: { type: string; payload: unknown; priority: number; requires: string[] }, payloadJson = JSON.stringify(t.payload ?? null)): string {
  return hashText(`[${JSON.stringify(t.type)},${payloadJson},${JSON.stringify(t.priority)},${JSON.stringify(requirementKey(t.requires))}]`);
}

/** What a run's idempotency key is bound to: the same key must come with the same pipeline and input. */
export function runRequestHash(r: { pipeline: string; input: unknown }): string {
  return hash([r.pipeline, r.input]);
}

const hashText = (text: string) => createHash('sha256').update(text).digest('base64url');
const hash = (parts: unknown[]) => hashText(JSON.stringify(parts));

/**
 * The rule for a key used again, which a store applies inside its write to every item whose key
 * exists already (committed, or earlier in the same batch): the same request gets the existing
 * task or run back; another request with the key is a conflict, and the whole batch is refused.
 */
export function repeatCheck(kind: 'task' | 'run', items: { idempotencyKey: string | null; requestHash: string | null }[]): RepeatCheck {
  return ({ index, existing }) => {
    const item = items[index];
    if (existing.requestHash === item.requestHash) return;
    throw new FleetError('FLEETD_ERR_IDEMPOTENCY_CONFLICT', `idempotency key ${item.idempotencyKey} was already used for a different ${kind}`, {
      idempotencyKey: item.idempotencyKey,
      [kind === 'task' ? 'taskId' : 'runId']: existing.id,
    });
  };
}
