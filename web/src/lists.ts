import { get, query } from './api.js';
import type { Page } from './types.js';

/** Reads pages until the end or `maxItems`, whichever comes first. */
export async function getAll<T>(path: string, params: Record<string, string | undefined>, maxItems = 10_000): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | undefined;
  do {
    const page = await get<Page<T>>(`${path}${query({ ...params, limit: 1000, cursor })}`);
    items.push(...page.items);
    cursor = page.nextCursor ?? undefined;
  } while (cursor && items.length < maxItems);
  return items;
}

/** How many of the given items belong to each agent. */
export function countBy<T>(items: T[], key: (t: T) => string | null): Map<string, number> {
  const counts = new Map<string, number>();
  for (const t of items) {
    const k = key(t);
    if (k) counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
}
