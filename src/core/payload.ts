import { FleetError } from '../domain/errors.js';

/**
 * Checks an arbitrary JSON value against the size and depth limits, without recursion (a deeply
 * nested value must not overflow fleetd's own stack). Returns the value's JSON text length.
 */
export function checkJsonValue(
  value: unknown,
  field: string,
  limits: { maxBytes: number; maxDepth: number },
  details: Record<string, unknown> = {},
): number {
  return checkedJson(value, field, limits, details).bytes;
}

/**
 * checkJsonValue's check, answering the value's JSON text too: a caller that stores the text (a
 * completion's result) serializes the value once.
 */
export function checkedJson(
  value: unknown,
  field: string,
  limits: { maxBytes: number; maxDepth: number },
  details: Record<string, unknown> = {},
): { text: string; bytes: number } {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth > limits.maxDepth) {
      throw new FleetError('FLEETD_ERR_VALIDATION', `${field}: nests deeper than ${limits.maxDepth} levels`, {
        field,
        maxDepth: limits.maxDepth,
        ...details,
      });
    }
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  const text = jsonText(value ?? null);
  if (text === undefined) {
    // Only an in-process caller can hand over such a value (a function, a symbol, a BigInt): HTTP
    // and the streams carry JSON. It is refused as bad input, not thrown as a TypeError.
    throw new FleetError('FLEETD_ERR_VALIDATION', `${field}: is not a JSON value (a function, a symbol or a BigInt, or holds a BigInt)`, { field, ...details });
  }
  const bytes = Buffer.byteLength(text);
  if (bytes > limits.maxBytes) {
    throw new FleetError('FLEETD_ERR_PAYLOAD_TOO_LARGE', `${field}: ${bytes} bytes of JSON is over the limit of ${limits.maxBytes}`, {
      field,
      bytes,
      maxBytes: limits.maxBytes,
      ...details,
    });
  }
  return { text, bytes };
}

/** The value's JSON text, or undefined for a value JSON cannot hold (JSON.stringify gives none, or throws on a BigInt). */
function jsonText(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch (err) {
    if (err instanceof TypeError) return undefined;
    throw err;
  }
}
