/** The API key the dashboard sends (read scope is enough), kept in this browser only. */
export const API_KEY_STORAGE = 'fleetd.apiKey';
/** The namespace the operator picked; absent: every namespace the key reaches. */
export const NAMESPACE_STORAGE = 'fleetd.namespace';

export const apiKey = (): string | null => localStorage.getItem(API_KEY_STORAGE);

/** The Authorization header of the stored key, if any. */
export function authorization(): Record<string, string> {
  const key = apiKey();
  return key ? { authorization: `Bearer ${key}` } : {};
}

export function storeApiKey(key: string): void {
  localStorage.setItem(API_KEY_STORAGE, key);
  // A namespace picked with another key may be out of this one's reach.
  localStorage.removeItem(NAMESPACE_STORAGE);
}

export function forgetApiKey(): void {
  localStorage.removeItem(API_KEY_STORAGE);
  localStorage.removeItem(NAMESPACE_STORAGE);
}

export const chosenNamespace = (): string | null => localStorage.getItem(NAMESPACE_STORAGE);

export function storeNamespace(namespace: string | null): void {
  if (namespace === null) localStorage.removeItem(NAMESPACE_STORAGE);
  else localStorage.setItem(NAMESPACE_STORAGE, namespace);
}

/**
 * The /v1/events address, with the key and the namespace in the query: browsers cannot set headers
 * on a WebSocket.
 */
export function eventsPath(): string {
  const q = new URLSearchParams();
  const key = apiKey();
  const namespace = chosenNamespace();
  if (key) q.set('token', key);
  if (namespace) q.set('namespace', namespace);
  const s = q.toString();
  return `/v1/events${s ? `?${s}` : ''}`;
}
