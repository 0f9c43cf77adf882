/** Hash routes (#/tasks/42, #/tasks?status=dead): deep links work without server-side routing. */
export type Route = { query: URLSearchParams } & (
  | { view: 'overview' }
  | { view: 'agents' }
  | { view: 'agent'; id: string }
  | { view: 'tasks' }
  | { view: 'task'; id: number }
  | { view: 'locks' }
);

export function parseRoute(hash: string): Route {
  const [path, search = ''] = hash.replace(/^#/, '').split('?');
  const query = new URLSearchParams(search);
  const at = { query };
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'agents') return parts[1] ? { ...at, view: 'agent', id: parts[1] } : { ...at, view: 'agents' };
  if (parts[0] === 'tasks') {
    const id = Number(parts[1]);
    return parts[1] && Number.isInteger(id) && id > 0 ? { ...at, view: 'task', id } : { ...at, view: 'tasks' };
  }
  if (parts[0] === 'locks') return { ...at, view: 'locks' };
  return { ...at, view: 'overview' };
}

/** Replaces the query of the current route without adding a history entry. */
export function setQuery(path: string, params: Record<string, string>): void {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '')).toString();
  history.replaceState(null, '', `#${path}${q ? `?${q}` : ''}`);
}
