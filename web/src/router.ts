/** Hash routes (#/tasks/42, #/tasks?status=dead): deep links work without server-side routing. */
export type Route = { query: URLSearchParams } & (
  | { view: 'overview' }
  | { view: 'agents' }
  | { view: 'agent'; id: string }
  | { view: 'tasks' }
  | { view: 'task'; id: number }
  | { view: 'pipelines' }
  | { view: 'run'; id: number }
  | { view: 'cases' }
  | { view: 'case'; id: number }
  | { view: 'locks' }
  | { view: 'schedules' }
  | { view: 'types' }
);

/** A positive integer id from the address, or undefined. */
function idOf(part: string | undefined): number | undefined {
  const id = Number(part);
  return part && Number.isInteger(id) && id > 0 ? id : undefined;
}

export function parseRoute(hash: string): Route {
  const [path, search = ''] = hash.replace(/^#/, '').split('?');
  const query = new URLSearchParams(search);
  const at = { query };
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const id = idOf(parts[1]);
  if (parts[0] === 'agents') return parts[1] ? { ...at, view: 'agent', id: parts[1] } : { ...at, view: 'agents' };
  if (parts[0] === 'tasks') return id ? { ...at, view: 'task', id } : { ...at, view: 'tasks' };
  if (parts[0] === 'pipelines') return id ? { ...at, view: 'run', id } : { ...at, view: 'pipelines' };
  if (parts[0] === 'cases') return id ? { ...at, view: 'case', id } : { ...at, view: 'cases' };
  if (parts[0] === 'locks') return { ...at, view: 'locks' };
  if (parts[0] === 'schedules') return { ...at, view: 'schedules' };
  if (parts[0] === 'types') return { ...at, view: 'types' };
  return { ...at, view: 'overview' };
}

/** Replaces the query of the current route without adding a history entry. */
export function setQuery(path: string, params: Record<string, string>): void {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '')).toString();
  history.replaceState(null, '', `#${path}${q ? `?${q}` : ''}`);
}
