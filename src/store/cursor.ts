import { invalid } from '../domain/errors.js';

/** Cursors are opaque to clients: the last row's sort key, base64url-encoded. */
export function encodeCursor(key: number): string {
  return Buffer.from(String(key)).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): number | undefined {
  if (cursor === undefined) return undefined;
  const key = Number(Buffer.from(cursor, 'base64url').toString());
  // Round-tripping rejects anything this server did not issue, including text that decodes to a number.
  if (!Number.isSafeInteger(key) || key < 0 || encodeCursor(key) !== cursor) {
    throw invalid('cursor', 'is not a cursor this server issued');
  }
  return key;
}
