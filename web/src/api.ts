import { authorization, chosenNamespace } from './auth.js';
import { connection } from './live.js';

/** An error the API answered with ({"error": {code, message, details}}), or a network failure. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

/** JSON over fetch. Every answer (or failure to get one) tells the connection whether fleetd is reachable. */
export async function api<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  let res: Response;
  // fleetd answers within the namespace picked (reads, and the writes of actions); none: all the key reaches.
  const namespace = chosenNamespace();
  try {
    res = await fetch(path, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...authorization(),
        ...(namespace ? { 'fleetd-namespace': namespace } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal,
    });
  } catch (err) {
    // A request its view no longer wants says nothing about fleetd.
    if (signal?.aborted) throw err;
    connection.httpFailed();
    throw new ApiError(0, 'NETWORK', `fleetd is not reachable: ${(err as Error).message}`);
  }
  connection.httpOk();
  const text = await res.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!res.ok) {
    const e = json?.error ?? {};
    const message = e.message ?? `HTTP ${res.status}`;
    // No credential, an unknown one, or one that may not even read: the operator must sign in. A
    // 403 to an action (a read key cancelling a task) is only that action's error.
    if (res.status === 401 || (res.status === 403 && method === 'GET')) connection.refused(message);
    throw new ApiError(res.status, e.code ?? 'HTTP', message);
  }
  return json as T;
}

const prefetched = new Map<string, Promise<unknown>>();

/**
 * Starts a GET before the view that needs it has loaded, so that the request and the view's
 * chunk travel together instead of one after the other. The view's first get() of it takes it.
 */
export function prefetch(path: string): void {
  const request = api('GET', path);
  request.catch(() => prefetched.delete(path));
  prefetched.set(path, request);
}

export function get<T>(path: string, signal?: AbortSignal): Promise<T> {
  const early = prefetched.get(path);
  if (early) {
    prefetched.delete(path);
    return early as Promise<T>;
  }
  return api<T>('GET', path, undefined, signal);
}

/** A query string from the defined, non-empty values. */
export function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}
