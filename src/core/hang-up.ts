/**
 * What ends a wait early (a long-poll's claim, a wait for a task's end): its client hanging up.
 * An AbortSignal is one. The HTTP routes pass their connection's instead (server/hang-up.ts): most
 * claims never wait, and an AbortController made for every request was 3 % of a plain-HTTP
 * drain's CPU.
 */
export interface HangUp {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}
