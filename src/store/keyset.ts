import type { Page } from '../domain/types.js';
import { invalid } from '../domain/errors.js';

/**
 * One page of a list, by keyset: the rows after the cursor's key in the list's order, one more than
 * the limit to learn whether another page follows. Every list query of every driver goes through
 * here, so that page boundaries are decided in one place.
 */
export interface KeysetQuery<R> {
  /** `SELECT … FROM …`, without WHERE. */
  select: string;
  /**
   * Conditions with one `?` each; those whose value is undefined are left out. An array value
   * stands for a list (`x IN (?)`): its `?` becomes one per item, and an empty list matches nothing.
   */
  where: [condition: string, value: unknown][];
  /** The unique, indexed column the pages follow, as the SQL names it. */
  key: string;
  /** The same key, read from a row. */
  keyOf: (row: R) => number;
  order: 'asc' | 'desc';
  cursor: string | undefined;
  limit: number;
}

/** How a dialect writes the n-th parameter (from 1): SQLite `?`, PostgreSQL `$n`. */
export type Placeholder = (n: number) => string;

export async function keysetPage<R>(
  q: KeysetQuery<R>,
  placeholder: Placeholder,
  fetch: (text: string, values: unknown[]) => R[] | Promise<R[]>,
): Promise<Page<R>> {
  const after = decodeCursor(q.cursor);
  const where = [...q.where, [`${q.key} ${q.order === 'asc' ? '>' : '<'} ?`, after] as [string, unknown]]
    .filter(([, value]) => value !== undefined)
    .map(([condition, value]): [string, unknown[]] => {
      if (!Array.isArray(value)) return [condition, [value]];
      return value.length === 0 ? ['1 = 0', []] : [condition.replace('?', value.map(() => '?').join(', ')), value];
    });
  const values = [...where.flatMap(([, value]) => value), q.limit + 1];
  let n = 0;
  const text = `${q.select}${where.length > 0 ? ` WHERE ${where.map(([condition]) => condition).join(' AND ')}` : ''} ORDER BY ${q.key} ${q.order.toUpperCase()} LIMIT ?`.replace(
    /\?/g,
    () => placeholder(++n),
  );
  const rows = await fetch(text, values);
  const more = rows.length > q.limit;
  const items = more ? rows.slice(0, q.limit) : rows;
  return { items, nextCursor: more ? encodeCursor(q.keyOf(items[items.length - 1])) : null };
}

export const mapPage = <R, T>(page: Page<R>, map: (row: R) => T): Page<T> => ({ items: page.items.map(map), nextCursor: page.nextCursor });

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
