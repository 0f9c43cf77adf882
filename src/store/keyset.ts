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
  /** Conditions with one `?` each, or none with WITHOUT_VALUE (see whereOf); those whose value is undefined are left out. */
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

/** The value of a condition that takes none: written as it is (a partial index's predicate, which a planner matches only as literal SQL). */
export const WITHOUT_VALUE = Symbol('without value');

/**
 * Conditions and their values, those whose value is undefined left out. A list value stands for an
 * `IN (?)` condition and takes one placeholder per item (an empty list matches nothing).
 */
export function whereOf(where: [condition: string, value: unknown][]): { conditions: string[]; values: unknown[] } {
  const conditions: string[] = [];
  const values: unknown[] = [];
  for (const [condition, value] of where) {
    if (value === undefined) continue;
    if (value === WITHOUT_VALUE) conditions.push(condition);
    else if (Array.isArray(value)) {
      conditions.push(condition.replace('(?)', value.length === 0 ? '(NULL)' : `(${value.map(() => '?').join(', ')})`));
      values.push(...value);
    } else {
      conditions.push(condition);
      values.push(value);
    }
  }
  return { conditions, values };
}

export async function keysetPage<R>(
  q: KeysetQuery<R>,
  placeholder: Placeholder,
  fetch: (text: string, values: unknown[]) => R[] | Promise<R[]>,
): Promise<Page<R>> {
  const after = decodeCursor(q.cursor);
  const where = whereOf([...q.where, [`${q.key} ${q.order === 'asc' ? '>' : '<'} ?`, after]]);
  const values = [...where.values, q.limit + 1];
  let n = 0;
  const text = `${q.select}${where.conditions.length > 0 ? ` WHERE ${where.conditions.join(' AND ')}` : ''} ORDER BY ${q.key} ${q.order.toUpperCase()} LIMIT ?`.replace(
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
