/** The API key the dashboard sends (read scope is enough), kept in this browser only. */
export const API_KEY_STORAGE = 'fleetd.apiKey';

export const apiKey = (): string | null => localStorage.getItem(API_KEY_STORAGE);
