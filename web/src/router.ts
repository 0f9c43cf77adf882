/** Hash routes (#/tasks/42, #/tasks?status=dead): deep links work without server-side routing. */
export type Route =
  | { view: 'overview'; query: URLSearchParams }
  | { view: 'agents'; query: URLSearchParams }
  | { view: 'agent'; id: string; query: URLSearchParams }
  | { view: 'tasks'; query: URLSearchParams }
  | { view: 'task'; id: number; query: URLSearchParams }
  | { view: 'locks'; query: URLSearchParams };

export function parseRoute(hash: string): Route {
  const [path, search = ''] = hash.replace(/^#/, '').split('?');
  const query = new URLSearchParams(search);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'agents') return parts[1] ? { view: 'agent', id: parts[1], query } : { view: 'agents', query };
  if (parts[0] === 'tasks') {
    const id = Number(parts[1]);
    return parts[1] && Number.isInteger(id) && id > 0 ? { view: 'task', id, query } : { view: 'tasks', query };
  }
  if (parts[0] === 'locks') return { view: 'locks', query };
  return { view: 'overview', query };
}

/** Replaces the query of the current route without adding a history entry. */
export function setQuery(path: string, params: Record<string, string>): void {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '')).toString();
  history.replaceState(null, '', `#${path}${q ? `?${q}` : ''}`);
}
