// A leaf, like errors.ts: the drivers, the bus and the Redis connections report here.

/** The services a node of a cluster depends on. */
export type DependencyName = 'postgres' | 'redis';

export interface DependencyStatus {
  up: boolean;
  /** Epoch ms of the last change between up and down (or of the start). */
  since: number;
  /** What the connection said when the outage began; null while up. */
  reason: string | null;
  /** Outages since the start. */
  outages: number;
  /** Connections re-established after they dropped, since the start. */
  reconnects: number;
}

/** How one connection (a part of its service) reports on itself. */
export interface DependencyReporter {
  /** The connection dropped or cannot be opened; repeated calls during one outage change nothing. */
  down(reason: string): void;
  /** The connection works (again). */
  up(): void;
}

interface State {
  /** The parts down now, with their reasons, in the order they went down. */
  down: Map<string, string>;
  since: number;
  outages: number;
  reconnects: number;
}

/**
 * Whether each service this node depends on is reachable, fed by its connections: a service is down
 * while any of its connections is (the pool, the LISTEN connection; the bus's and the cache's Redis
 * connections). An outage is logged once when it begins and once when it ends, never once per
 * failed request, and shows in /readyz, in /metrics and on the dashboard.
 */
export class Dependencies {
  private readonly states = new Map<DependencyName, State>();

  constructor(
    private readonly log: { warn(obj: object, msg?: string): void },
    private readonly now: () => number = Date.now,
  ) {}

  /** The reporter of one connection of `name`; declaring it counts the service as used (and up). */
  reporter(name: DependencyName, part: string): DependencyReporter {
    const state = this.stateOf(name);
    return {
      down: (reason) => {
        if (state.down.has(part)) return;
        state.down.set(part, reason);
        if (state.down.size > 1) return;
        state.since = this.now();
        state.outages++;
        this.log.warn({ dependency: name, connection: part, reason }, `${name} is unavailable; retrying with backoff`);
      },
      up: () => {
        if (!state.down.delete(part)) return;
        state.reconnects++;
        if (state.down.size > 0) return;
        const seconds = (this.now() - state.since) / 1000;
        state.since = this.now();
        this.log.warn({ dependency: name, connection: part, outageSeconds: Math.round(seconds * 10) / 10 }, `${name} is available again`);
      },
    };
  }

  isUp(name: DependencyName): boolean {
    return (this.states.get(name)?.down.size ?? 0) === 0;
  }

  /** Every service in use, by name. */
  status(): Partial<Record<DependencyName, DependencyStatus>> {
    const out: Partial<Record<DependencyName, DependencyStatus>> = {};
    for (const [name, s] of this.states) {
      out[name] = { up: s.down.size === 0, since: s.since, reason: s.down.values().next().value ?? null, outages: s.outages, reconnects: s.reconnects };
    }
    return out;
  }

  private stateOf(name: DependencyName): State {
    let state = this.states.get(name);
    if (!state) this.states.set(name, (state = { down: new Map(), since: this.now(), outages: 0, reconnects: 0 }));
    return state;
  }
}

/** For drivers used without a server (`fleetd keys`, tests): nobody to tell. */
export const unreported: DependencyReporter = { down() {}, up() {} };
