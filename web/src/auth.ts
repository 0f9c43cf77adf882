/** The API key the dashboard sends (read scope is enough), kept in this browser only. */
export const API_KEY_STORAGE = 'fleetd.apiKey';

export const apiKey = (): string | null => localStorage.getItem(API_KEY_STORAGE);

export function storeApiKey(key: string): void {
  localStorage.setItem(API_KEY_STORAGE, key);
}

export function forgetApiKey(): void {
  localStorage.removeItem(API_KEY_STORAGE);
}

/** The /v1/events address, with the key in the query: browsers cannot set headers on a WebSocket. */
export function eventsPath(): string {
  const key = apiKey();
  return `/v1/events${key ? `?token=${encodeURIComponent(key)}` : ''}`;
}
