import { useEffect, useRef, useState } from 'preact/hooks';
import { connection, type ConnectionState } from './live.js';
import type { LiveEvent } from './types.js';

export function useConnectionState(): ConnectionState {
  const [state, setState] = useState(connection.state);
  useEffect(() => {
    const off = connection.onState(setState);
    // The state may have changed between the first render and this effect.
    setState(connection.state);
    return off;
  }, []);
  return state;
}

export interface LiveDataOptions {
  /** Fetches the view's data over HTTP: on mount, on (re)connection, and on every poll. */
  load: () => Promise<unknown> | void;
  /** How often to poll while there is no live stream. */
  intervalMs: number;
  /** Topics of /v1/events that concern the view. */
  topics: string[];
  /**
   * What to do with a batch of events; true asks to load again (at most once a second), which is
   * also what happens without onEvents.
   */
  onEvents?: (events: LiveEvent[]) => boolean | void;
  /**
   * For views that apply events to what they loaded: load only once the server has confirmed the
   * topics, so that no change falls between the load and the first event. Others load at once
   * (the first paint does not wait for the socket), and once more when the topics are confirmed.
   */
  loadWhenSubscribed?: boolean;
}

const RELOAD_THROTTLE_MS = 1_000;

/**
 * Keeps a view's data current: live from the event stream when it is open, by polling otherwise.
 * `deps` are what the data depends on (filters, an id): a change reloads.
 */
export function useLiveData(options: LiveDataOptions, deps: unknown[]): void {
  const latest = useRef(options);
  latest.current = options;
  const live = useConnectionState() === 'live';

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        await latest.current.load();
      } catch {
        // The connection state shows that fleetd is unreachable; the next poll or event tries again.
      }
    };
    if (!live) {
      const poll = async () => {
        await load();
        if (!stopped) timer = setTimeout(poll, latest.current.intervalMs);
      };
      void poll();
      return () => {
        stopped = true;
        clearTimeout(timer);
      };
    }
    let lastLoad = 0;
    if (!latest.current.loadWhenSubscribed) {
      lastLoad = Date.now();
      void load();
    }
    const reload = () => {
      if (timer !== undefined) return;
      const wait = Math.max(0, lastLoad + RELOAD_THROTTLE_MS - Date.now());
      timer = setTimeout(() => {
        timer = undefined;
        lastLoad = Date.now();
        if (!stopped) void load();
      }, wait);
    };
    const unsubscribe = connection.subscribe(
      latest.current.topics,
      (events) => {
        const onEvents = latest.current.onEvents;
        if (!onEvents || onEvents(events)) reload();
      },
      () => {
        if (latest.current.loadWhenSubscribed) void load();
        // A change between the first load and the server's confirmation of the topics sent no event
        // here: load once more (throttled), or it would show only at the next change.
        else reload();
      },
    );
    return () => {
      stopped = true;
      clearTimeout(timer);
      unsubscribe();
    };
  }, [live, ...deps]);
}

/** Re-renders every intervalMs, for "5 s ago" labels. */
export function useTick(intervalMs: number): void {
  const [, setN] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setN((n) => n + 1), intervalMs);
    return () => clearInterval(t);
  }, [intervalMs]);
}
