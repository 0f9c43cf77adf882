import { AssertionError } from 'node:assert';
import type { Bus } from '../bus/bus.js';
import { isDependencyUnavailable, outcomeUnknown } from '../domain/errors.js';
import { claimKeysOf, taskRequirementKey } from '../domain/requirements.js';
import type { Agent, Task } from '../domain/types.js';
import type { ClaimWaiter, ClaimWaiters, WakeReason } from './claim-waiters.js';
import type { Logger } from './context.js';
import type { HangUp } from './hang-up.js';

/**
 * Task delivery: when to claim, for whom, and how much. Tasks reach agents two ways, and both go
 * through here: a long-poll (`claim`, the HTTP route) and a push channel (`openChannel`, the
 * WebSocket gateway, which supplies only credit and a send function). The claim itself, one store
 * call that never waits, is `TaskService.claimReady`; everything around it lives in this file:
 * sleeping on the claim waiters instead of re-querying, the generation check that catches tasks
 * announced while a claim was in flight, credit, the room of a full agent, and the hand-on rule.
 *
 * ## A long-poll is always in one of these states
 *
 *     CLAIMING ──▶ WAITING ──▶ CLAIMING ──▶ … ──▶ DONE
 *
 * - CLAIMING (initial): one claim in flight; not registered with the waiters, no timer.
 *   → DONE when the claim leased tasks, when `waitMs` was 0, when the deadline has passed, or when
 *   the caller aborted or its wait was ended (`endWaitsOf`, `stop`) while the claim was in flight.
 *   → CLAIMING again at once (no transition) when tasks were announced, or its full agent's room
 *   was freed, while the claim was in flight: it may have missed them.
 *   → WAITING otherwise.
 * - WAITING: registered with the waiters, wanting `max` tasks (0 while its agent is full, so that
 *   only the end of one of its own leases wakes it), and a timer set to the deadline, or to when
 *   its agent's lost claims fall due if sooner (see LostClaims).
 *   → CLAIMING when woken: for new tasks, because its agent's room changed, or on that timer.
 *   → DONE on the timer, an abort, or an end.
 * - DONE: answered; registered nowhere, no timer.
 *
 * ## A push channel is always in one of these states
 *
 *     IDLE ◀──▶ CLAIMING
 *       └──────────┴──▶ CLOSED
 *
 * - IDLE (initial): registered with the waiters, wanting its credit (0 while its agent is full); no
 *   claim in flight and no wake-up left unanswered.
 *   → CLAIMING when credit is added or it is woken, and it has credit; or when its agent's lost
 *   claims fall due (a timer while they are not), credit or not.
 *   → CLOSED on `close`.
 * - CLAIMING: one claim in flight for `asked` tasks, and it wants only its credit beyond them, so
 *   it is never counted twice for the same credit. A wake-up meanwhile is remembered and claimed
 *   for next. After each claim the tasks are sent and credit spent; it claims again (no transition)
 *   while credit is left and wake-ups are pending, or tasks were announced during a claim that came
 *   back short (nobody may be awake for them).
 *   → IDLE when there is nothing more to claim; wake-ups it can no longer use are handed on.
 *   → CLOSED on `close`, or when a send fails.
 * - CLOSED (final): registered nowhere; pending wake-ups handed on. A claim in flight finishes and
 *   its tasks are not sent: they stay leased to the agent, whose reconnect gets them back in its
 *   `welcome`, and which the disconnect grace (or the lease's expiry) returns to the queue.
 *
 * Every transition is checked against these tables; an impossible one throws an AssertionError (a
 * bug in this file, never the caller's input): a long-poll rejects with it, a channel's claim loop
 * logs it at error level. docs/delivery.md tells the same in prose.
 */

export type PollState = 'claiming' | 'waiting' | 'done';
export type ChannelState = 'idle' | 'claiming' | 'closed';

const POLL_TRANSITIONS: Record<PollState, readonly PollState[]> = {
  claiming: ['waiting', 'done'],
  waiting: ['claiming', 'done'],
  done: [],
};

const CHANNEL_TRANSITIONS: Record<ChannelState, readonly ChannelState[]> = {
  idle: ['claiming', 'closed'],
  claiming: ['idle', 'closed'],
  closed: [],
};

function checkTransition<S extends string>(table: Record<S, readonly S[]>, what: string, from: S, to: S): void {
  if (!table[from].includes(to)) {
    throw new AssertionError({ message: `${what}: ${from} → ${to} is not a transition`, actual: to, expected: table[from], operator: 'transition' });
  }
}

/** One state change, as `onTransition` reports it. */
export type DeliveryTransition =
  | { kind: 'poll'; agentId: string; from: PollState; to: PollState }
  | { kind: 'channel'; agentId: string; from: ChannelState; to: ChannelState };

export interface ClaimParams {
  agentId: string;
  max: number;
  /** Long-poll: wait up to this many ms for a task when none is ready. 0 answers at once. */
  waitMs: number;
  /** Ends the wait when it aborts: the client hung up. */
  signal?: HangUp;
}

/** What one claim that never waits answers: the tasks leased, the agent's claim keys (claimKeysOf) and namespace, and its room left after the claim. */
export interface ReadyClaim {
  tasks: Task[];
  capabilities: string[];
  namespace: string;
  room: number;
}

export interface DeliveryOptions {
  waiters: ClaimWaiters;
  /** Wake-ups come from it: tasks.available, and the events that end a lease. */
  bus: Bus;
  /** One claim that never waits (TaskService.claimReady), written as `claimId`. `max` is always at least 1. */
  claimReady(params: { agentId: string; max: number; claimId: number }): Promise<ReadyClaim>;
  /** The tasks still leased to the agent by these claims, but the leases in `except` (TaskService.leasedByClaims). */
  leasedByClaims(agentId: string, claimIds: readonly number[], except: ReadonlySet<string>): Promise<Task[]>;
  /** Every task leased to the agent now (TaskService.leasedTo). */
  leasedTo(agentId: string): Promise<Task[]>;
  /**
   * Credit makes a channel whose agent was full claim again (see Channel.addCredit). Only where the
   * store runs a turn's writes in the order they were started (Store.writesInStartOrder): elsewhere
   * the claim could run before the outcome that freed the slot, find no room, and cost a claim.
   */
  claimOnCredit?: boolean;
  /** The fleet's clock, in epoch ms: long-poll deadlines are measured on it. */
  now(): number;
  log: Logger;
  /** Told of every state change of a long-poll or a channel: for tracing and for tests. */
  onTransition?(transition: DeliveryTransition): void;
}

/** A push connection's side: what it gives delivery. */
export interface ChannelOptions {
  /** Its labels, when it has any, meet tasks' `label:` requirements. */
  agent: Pick<Agent, 'id' | 'namespace' | 'capabilities' | 'maxConcurrency'> & { labels?: Agent['labels'] };
  /**
   * Hands leased tasks to the connection. Returns false when it could not (the socket is closing, or
   * was cut off as too slow): the channel closes, and the tasks stay leased to the agent.
   */
  send(tasks: Task[]): boolean;
}

/** A push connection's handle on delivery. */
export interface DeliveryChannel {
  readonly state: ChannelState;
  /** When (the fleet's clock) this channel last claimed: a claim counts as the agent's heartbeat. */
  readonly claimedAt: number;
  /**
   * The agent may be sent `n` more tasks. Credit past its maxConcurrency is not kept. With
   * `claimOnCredit`, credit also says a slot of the agent is free: a channel that found its agent
   * full claims again.
   */
  addCredit(n: number): void;
  /** The connection is gone: claim nothing more for it. Closing twice is harmless. */
  close(): void;
}

/** Wake-up counts not yet answered by a claim, by requirement key. */
type Reasons = Map<string, number>;

function addReason(reasons: Reasons, reason: WakeReason): void {
  reasons.set(reason.key, (reasons.get(reason.key) ?? 0) + reason.count);
}

/**
 * The hand-on rule. A wake-up counts its waiter against `count` new tasks of one requirement, and
 * nobody else is woken for those. When the claim that follows takes fewer of them (it took others
 * of a higher priority instead, ran out of credit or room, failed, or never happened because its
 * channel closed), the rest are still queued with nobody awake for them: others must be woken for
 * the shortfall. Only a claim that found nothing while its agent still had room proves there is no
 * claimable task of any requirement it can do, and hands nothing on.
 */
export function shortfall(reasons: Reasons, claimed?: Pick<ReadyClaim, 'tasks' | 'room'>): Record<string, number> {
  const short: Record<string, number> = {};
  if (claimed && claimed.tasks.length === 0 && claimed.room > 0) return short;
  for (const [key, count] of reasons) {
    const taken = claimed ? claimed.tasks.filter((t) => taskRequirementKey(t) === key).length : 0;
    if (taken < count) short[key] = count - taken;
  }
  return short;
}

/** How long after a claim's answer was lost its leases are first looked for: its statement may still be running to its commit. */
export const LOST_CLAIM_SETTLE_MS = 1_000;
/** The longest wait between two looks while the store cannot be read. */
const LOST_CLAIM_RETRY_MAX_MS = 10_000;
/** The most lost claims kept for one agent: a long outage's worth of failed claims is not kept whole. */
const LOST_CLAIMS_KEPT = 64;

interface AgentLostClaims {
  /** Lost claims not yet read back in full, oldest first. */
  claimIds: Set<number>;
  /** Leases (`leaseKey`) the agent has been handed since the first loss, here or by a welcome or GET /leases: never handed again. */
  handed: Set<string>;
  /** When to read them back (the fleet's clock). */
  lookAt: number;
  failures: number;
  /** A read-back is on its way: nobody else reads, and the entry stays. */
  reading: boolean;
}

/** One lease of a task: a task released and leased again is another. */
export const leaseKey = (task: Pick<Task, 'id' | 'claimedAt'>): string => `${task.id}@${task.claimedAt}`;

/**
 * Claims whose answer was lost, by agent. A claim that failed because the store's connection dropped
 * while its statement was on its way (outcomeUnknown) may have leased tasks all the same: PostgreSQL
 * runs a statement to its commit whatever became of the connection that sent it. Those leases reached
 * nobody, and alone they would hold their tasks, and the agent's room, until they expire. So every
 * claim carries an id, written on each task it leases (claim_id, as a receipt handle), and the
 * agent's next claim on this node hands a lost claim's tasks over first, read back by that id once
 * LOST_CLAIM_SETTLE_MS has passed (and then only when they are still leased to the agent). A claim
 * made for nobody (a closed channel, a long-poll whose client hung up) is not remembered: its tasks
 * are the welcome's, the grace's or the lease's to deal with, as when it is answered. What is handed
 * to the agent otherwise in the meantime (a WebSocket welcome, GET /v1/agents/:id/leases, each after
 * its read) is never handed again, and the agent's going offline forgets them, as it releases their
 * leases.
 */
class LostClaims {
  private readonly byAgent = new Map<string, AgentLostClaims>();
  /** From a random start, so that another node's claims of the same agent are unlikely to share an id (2^48 of 2^53). */
  private nextClaimId = Math.floor(Math.random() * 2 ** 48);

  constructor(private readonly options: DeliveryOptions) {}

  newClaimId(): number {
    return this.nextClaimId++;
  }

  add(agentId: string, claimId: number): void {
    const lookAt = this.options.now() + LOST_CLAIM_SETTLE_MS;
    let lost = this.byAgent.get(agentId);
    if (!lost) this.byAgent.set(agentId, (lost = { claimIds: new Set(), handed: new Set(), lookAt, failures: 0, reading: false }));
    lost.claimIds.add(claimId);
    if (lost.claimIds.size > LOST_CLAIMS_KEPT) lost.claimIds.delete(lost.claimIds.values().next().value!);
    lost.lookAt = Math.max(lost.lookAt, lookAt);
  }

  /** When the agent's lost claims are due to be read back (the fleet's clock); undefined when it has none, or they are being read. */
  dueAt(agentId: string): number | undefined {
    const lost = this.byAgent.get(agentId);
    return lost && !lost.reading ? lost.lookAt : undefined;
  }

  /**
   * Up to `max` of the tasks the agent's lost claims leased, read back: [] when it has none, before
   * they are due, or while another claim reads them. Rejects when the store cannot be read: they
   * are looked for again later, each time later. Tasks left over for want of room are read again
   * by the next claim, whom the agent's waiters are woken to make.
   */
  async take(agentId: string, max: number): Promise<Task[]> {
    const lost = this.byAgent.get(agentId);
    if (!lost || lost.reading || lost.lookAt > this.options.now()) return [];
    const claimIds = [...lost.claimIds];
    lost.reading = true;
    let leased: Task[];
    try {
      leased = await this.options.leasedByClaims(agentId, claimIds, lost.handed);
    } catch (err) {
      lost.reading = false;
      lost.failures++;
      lost.lookAt = this.options.now() + Math.min(LOST_CLAIM_RETRY_MAX_MS, LOST_CLAIM_SETTLE_MS * 2 ** lost.failures);
      // Those of the agent's claims that waited meanwhile set no time to look again: they set it now.
      this.options.waiters.wakeAgent(agentId);
      throw err;
    }
    lost.reading = false;
    // Forgotten meanwhile: the agent went offline, and its leases were released.
    if (this.byAgent.get(agentId) !== lost) return [];
    lost.failures = 0;
    // A welcome whose read finished first has handed some of them already.
    const fresh = leased.filter((t) => !lost.handed.has(leaseKey(t)));
    const tasks = fresh.slice(0, max);
    for (const task of tasks) lost.handed.add(leaseKey(task));
    if (tasks.length < fresh.length) this.options.waiters.wakeAgent(agentId);
    else {
      for (const id of claimIds) lost.claimIds.delete(id);
      if (lost.claimIds.size === 0) this.byAgent.delete(agentId);
    }
    return tasks;
  }

  /** The agent was just handed `tasks`, every lease it holds: none of them is handed again. */
  handedAll(agentId: string, tasks: readonly Task[]): void {
    const lost = this.byAgent.get(agentId);
    if (lost) for (const task of tasks) lost.handed.add(leaseKey(task));
  }

  forget(agentId: string): void {
    this.byAgent.delete(agentId);
  }
}

/** Owns every long-poll and push channel of this node. Nothing is subscribed until `start()`. */
export class TaskDelivery {
  private readonly polls = new Map<string, Set<Poll>>();
  private readonly channels = new Set<Channel>();
  private readonly lost: LostClaims;
  private unsubscribe: (() => void)[] = [];
  private stopped = false;

  constructor(readonly options: DeliveryOptions) {
    this.lost = new LostClaims(options);
  }

  start(): void {
    this.stopped = false;
    const { bus } = this.options;
    this.unsubscribe.push(bus.subscribe('tasks.available', (e) => this.tasksAvailable(e.byRequirement)));
    // An expired lease says its agent did not extend or complete in time: it may be frozen with its
    // connection open, and a long-poll it left waiting would take work it will never run. That
    // claim ends with no tasks (before the room it frees wakes it below); a live agent claims again.
    this.unsubscribe.push(
      bus.subscribe('task.requeued', (e) => {
        if (e.reason === 'lease_expired' && e.task.agentId !== null) this.endWaitsOf(e.task.agentId);
      }),
    );
    // An agent gone offline had its leases released, those of lost claims among them.
    for (const name of ['agent.offline', 'agent.deleted'] as const) this.unsubscribe.push(bus.subscribe(name, (e) => this.lost.forget(e.agent.id)));
    // A lease that ends frees room for its agent: a full agent's waiting claim looks again.
    for (const name of ['task.completed', 'task.failed', 'task.dead', 'task.cancelled', 'task.requeued'] as const) {
      this.unsubscribe.push(
        bus.subscribe(name, (e) => {
          if (e.task.agentId !== null) this.roomChanged(e.task.agentId);
        }),
      );
    }
  }

  /** One of the agent's leases ended. Waiting claims are woken; one mid-claim may have seen the agent full, and looks again. */
  private roomChanged(agentId: string): void {
    for (const poll of this.polls.get(agentId) ?? []) poll.roomChanged();
    this.options.waiters.wakeAgent(agentId);
  }

  /** Ends every long-poll (they answer with what they hold, or nothing) and closes every channel. */
  stop(): void {
    this.stopped = true;
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    for (const set of [...this.polls.values()]) for (const poll of [...set]) poll.end();
    for (const channel of [...this.channels]) channel.close();
  }

  /** Claimable tasks appeared (submitted here, or announced by another node sharing the store). */
  tasksAvailable(byRequirement: Record<string, number>): void {
    this.options.waiters.notify(byRequirement);
  }

  /**
   * Leases up to `max` tasks the agent can do. With `waitMs`, waits for work to appear and is woken
   * the moment a matching task is submitted or returns to the queue: no sleep-and-requery. Answers
   * [] at the deadline, on abort, or when its wait is ended.
   */
  claim(params: ClaimParams): Promise<Task[]> {
    const poll = new Poll(this, params);
    let set = this.polls.get(params.agentId);
    if (!set) this.polls.set(params.agentId, (set = new Set()));
    set.add(poll);
    return poll.run().finally(() => {
      set.delete(poll);
      if (set.size === 0 && this.polls.get(params.agentId) === set) this.polls.delete(params.agentId);
    });
  }

  /** Ends the agent's long-polls now: a waiting one answers [], one mid-claim answers what it leased. */
  endWaitsOf(agentId: string): void {
    for (const poll of [...(this.polls.get(agentId) ?? [])]) poll.end();
  }

  /** A push connection for `agent`, with no credit yet. */
  openChannel(options: ChannelOptions): DeliveryChannel {
    const channel = new Channel(this, options);
    if (this.stopped) channel.close();
    else this.channels.add(channel);
    return channel;
  }

  /**
   * Every lease the agent holds, read after whatever was already committed, for the agent to be
   * handed (a WebSocket welcome, GET /v1/agents/:id/leases): none of them is handed over again as a
   * lost claim's.
   */
  async handAllLeases(agentId: string): Promise<Task[]> {
    const leased = await this.options.leasedTo(agentId);
    this.lost.handedAll(agentId, leased);
    return leased;
  }

  /**
   * @internal One claim that never waits. Remembered as lost when its answer is (see LostClaims),
   * if it was made for somebody still there to be handed its tasks (`live`).
   */
  async claimOnce(agentId: string, max: number, live: () => boolean): Promise<ReadyClaim> {
    const claimId = this.lost.newClaimId();
    try {
      return await this.options.claimReady({ agentId, max, claimId });
    } catch (err) {
      if (outcomeUnknown(err) && live()) this.lost.add(agentId, claimId);
      throw err;
    }
  }

  /** @internal Up to `max` tasks the agent's lost claims leased, once they are due. */
  takeLost(agentId: string, max: number): Promise<Task[]> {
    return this.lost.take(agentId, max);
  }

  /** @internal When the agent's lost claims are due to be handed over; undefined when it has none. */
  lostDueAt(agentId: string): number | undefined {
    return this.lost.dueAt(agentId);
  }

  /** @internal Whether the agent's lost claims are due to be handed over now. */
  lostDue(agentId: string): boolean {
    return (this.lost.dueAt(agentId) ?? Infinity) <= this.options.now();
  }

  /** @internal */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** @internal */
  forget(channel: Channel): void {
    this.channels.delete(channel);
  }

  /**
   * @internal The hand-on of a claim that failed with `err`. One that failed because the store is
   * unreachable hands nothing on: the others' claims would fail too, and would hand the wake-ups
   * back, round and round while the outage lasts; the store wakes every waiter for what is queued
   * once its connections work again (store.listen).
   */
  handOnFailed(reasons: Reasons, err: unknown): void {
    if (!isDependencyUnavailable(err)) this.handOn(reasons);
  }

  /** @internal Wakes others for the wake-ups a claim did not use. */
  handOn(reasons: Reasons, claimed?: ReadyClaim): void {
    if (reasons.size === 0) return;
    const short = shortfall(reasons, claimed);
    if (Object.keys(short).length > 0) this.options.waiters.notify(short);
  }
}

class Poll {
  state: PollState = 'claiming';
  private ended = false;
  /** One of its agent's leases ended while a claim was in flight: a full answer may be stale. */
  private freedDuringClaim = false;
  /** Set while WAITING: answers the wait. */
  private settle: ((reason: WakeReason | undefined | false) => void) | undefined;

  constructor(
    private readonly delivery: TaskDelivery,
    private readonly params: ClaimParams,
  ) {}

  private to(next: PollState): void {
    checkTransition(POLL_TRANSITIONS, `long-poll of ${this.params.agentId}`, this.state, next);
    const from = this.state;
    this.state = next;
    this.delivery.options.onTransition?.({ kind: 'poll', agentId: this.params.agentId, from, to: next });
  }

  roomChanged(): void {
    if (this.state === 'claiming') this.freedDuringClaim = true;
  }

  /** Stop waiting: now if WAITING, after the claim in flight if CLAIMING. */
  end(): void {
    this.ended = true;
    this.settle?.(false);
  }

  async run(): Promise<Task[]> {
    const { agentId, max, waitMs, signal } = this.params;
    const { waiters, now } = this.delivery.options;
    const deadline = now() + waitMs;
    let reasons: Reasons = new Map();
    for (;;) {
      const generation = waiters.generation;
      this.freedDuringClaim = false;
      let claimed: ReadyClaim;
      try {
        if (this.delivery.lostDue(agentId)) {
          const lost = await this.delivery.takeLost(agentId, max);
          if (lost.length > 0) {
            this.delivery.handOn(reasons);
            this.to('done');
            return lost;
          }
        }
        claimed = await this.delivery.claimOnce(agentId, max, () => !signal?.aborted && !this.delivery.isStopped);
      } catch (err) {
        this.delivery.handOnFailed(reasons, err);
        this.to('done');
        throw err;
      }
      // Read before handing on: a hand-on is no new task for this claim to look for.
      const missed = waiters.generation !== generation || (claimed.room <= 0 && this.freedDuringClaim);
      this.delivery.handOn(reasons, claimed);
      reasons = new Map();
      const { tasks, capabilities, namespace, room } = claimed;
      if (tasks.length > 0 || waitMs <= 0 || this.ended || this.delivery.isStopped || signal?.aborted) {
        this.to('done');
        return tasks;
      }
      // Tasks announced, or room freed, while the claim was in flight: it may have missed them.
      if (missed) continue;
      const remaining = deadline - now();
      if (remaining <= 0) {
        this.to('done');
        return [];
      }
      this.to('waiting');
      // Lost claims falling due wake it too: their leases take the agent's room, and may be all of it.
      const lookAt = this.delivery.lostDueAt(agentId) ?? Infinity;
      const woken = await this.wait(capabilities, namespace, room > 0 ? max : 0, Math.max(0, Math.min(remaining, lookAt - now())));
      if (woken === false) {
        if (now() < deadline && !this.ended && !signal?.aborted && !this.delivery.isStopped) {
          this.to('claiming');
          continue;
        }
        this.to('done');
        return [];
      }
      if (woken) addReason(reasons, woken);
      this.to('claiming');
    }
  }

  /** Resolves with the wake-up's reason (undefined when its agent's room changed), or false at the deadline, abort or end. */
  private wait(capabilities: string[], namespace: string, want: number, timeoutMs: number): Promise<WakeReason | undefined | false> {
    const { signal, agentId } = this.params;
    return new Promise((resolve) => {
      const settle = (result: WakeReason | undefined | false) => {
        if (this.settle !== settle) return;
        this.settle = undefined;
        clearTimeout(timer);
        remove();
        signal?.removeEventListener('abort', onAbort);
        resolve(result);
      };
      const onAbort = () => settle(false);
      this.settle = settle;
      const timer = setTimeout(onAbort, timeoutMs);
      const waiter: ClaimWaiter = {
        agentId,
        capabilities: new Set(capabilities),
        namespace,
        want: () => (this.settle === settle ? want : 0),
        wake: (reason) => settle(reason),
      };
      const remove = this.delivery.options.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

class Channel implements DeliveryChannel {
  state: ChannelState = 'idle';
  claimedAt = -Infinity;
  private credit = 0;
  /** What the claim in flight asked for: that credit is not offered to wake-ups again. */
  private asked = 0;
  /** The agent holds maxConcurrency tasks: it sleeps through new tasks until one of its leases ends. */
  private full = false;
  /** Wake-ups not yet answered by a claim. */
  private pending: Reasons = new Map();
  /** One of its agent's leases ended while a claim was in flight: a full answer may be stale. */
  private freedDuringClaim = false;
  /** Look again after the claim in flight. */
  private again = false;
  /** Set while its agent has lost claims not yet due: pumps when they are. */
  private lostTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * It has been granted credit: the agent has its welcome, which lists every lease it held then. Until
   * then it sends nothing, lost claims' tasks included, which the welcome may list again.
   */
  private credited = false;
  private readonly waiter: ClaimWaiter;
  private readonly removeWaiter: () => void;

  constructor(
    private readonly delivery: TaskDelivery,
    private readonly options: ChannelOptions,
  ) {
    this.waiter = {
      agentId: options.agent.id,
      capabilities: new Set(claimKeysOf(options.agent)),
      namespace: options.agent.namespace,
      want: () => (this.state === 'closed' || this.full ? 0 : this.credit - this.asked),
      wake: (reason) => {
        if (reason) addReason(this.pending, reason);
        else {
          this.full = false;
          this.freedDuringClaim = true;
        }
        this.pump();
      },
    };
    this.removeWaiter = delivery.options.waiters.add(this.waiter);
  }

  private to(next: ChannelState): void {
    checkTransition(CHANNEL_TRANSITIONS, `channel of ${this.options.agent.id}`, this.state, next);
    const from = this.state;
    this.state = next;
    this.delivery.options.onTransition?.({ kind: 'channel', agentId: this.options.agent.id, from, to: next });
  }

  addCredit(n: number): void {
    if (this.state === 'closed') return;
    this.credited = true;
    // Credit past maxConcurrency is never usable (the store leases no more), and a waiter wanting
    // more than it can hold is counted for tasks that it must then hand on to others.
    this.credit = Math.min(this.credit + n, this.options.agent.maxConcurrency);
    // An agent grants credit as a slot of its own frees: with the outcome that ends the slot's lease,
    // read just before from the same socket. So credit looks again as the lease's end would: the
    // claim joins the outcome's write, after it, and the next task leaves with the outcome's answer
    // instead of one commit later. Were the lease not ended after all, the claim finds no room.
    if (this.delivery.options.claimOnCredit) {
      this.full = false;
      this.freedDuringClaim = true;
    }
    this.delivery.options.waiters.mayWant(this.waiter);
    this.pump();
  }

  close(): void {
    if (this.state === 'closed') return;
    this.to('closed');
    clearTimeout(this.lostTimer);
    this.removeWaiter();
    this.delivery.forget(this);
    const pending = this.pending;
    this.pending = new Map();
    this.delivery.handOn(pending);
  }

  private pump(): void {
    if (this.state === 'claiming') {
      this.again = true;
      return;
    }
    // In IDLE a wake-up with a reason comes only with credit and room (want() > 0): none is left pending here.
    if (this.state === 'closed' || ((this.credit <= 0 || this.full) && !this.lostDue())) return;
    this.to('claiming');
    // During a dependency's outage nothing is lost: the store wakes every waiter for what is queued
    // once its connections work again, and the outage is logged once, not per claim.
    this.claimLoop().catch((err: unknown) => {
      if (!isDependencyUnavailable(err)) this.delivery.options.log.error({ err, agentId: this.options.agent.id }, 'push to agent failed');
    });
  }

  /** Claims while credit, room and reasons last; one claim in flight at a time. Entered in CLAIMING. */
  private async claimLoop(): Promise<void> {
    const { waiters, now } = this.delivery.options;
    const agentId = this.options.agent.id;
    let reasons: Reasons = new Map();
    let failure: unknown;
    try {
      do {
        this.again = false;
        if (this.lostDue()) {
          // Sent whatever the credit: they take room the agent has, as their leases count against it.
          const lost = await this.delivery.takeLost(agentId, Infinity);
          if (this.state === 'closed') return;
          this.credit = Math.max(0, this.credit - lost.length);
          if (lost.length > 0 && !this.send(lost)) {
            this.close();
            return;
          }
        }
        if (this.credit <= 0 || this.full) break;
        const generation = waiters.generation;
        reasons = this.pending;
        this.pending = new Map();
        const asked = (this.asked = this.credit);
        this.freedDuringClaim = false;
        let claimed: ReadyClaim;
        try {
          claimed = await this.delivery.claimOnce(agentId, asked, () => this.state !== 'closed');
        } finally {
          this.asked = 0;
          // It wants its credit again (granted during the claim, or the claim failed): back in the
          // line before the claim's hand-on, which may be for it.
          waiters.mayWant(this.waiter);
        }
        this.claimedAt = now();
        this.credit -= claimed.tasks.length;
        this.full = claimed.room <= 0 && !this.freedDuringClaim;
        // A claim that came back short found nothing more it could take; tasks announced while it
        // was in flight were counted for other waiters, or for nobody if none wanted them. Read
        // before handing on: a hand-on is no new task for this claim to look for.
        const missed = waiters.generation !== generation && claimed.tasks.length < asked && !this.full;
        this.delivery.handOn(reasons, claimed);
        reasons = new Map();
        // Closed while the claim was in flight: its tasks stay leased to the agent (see the header).
        if (this.state === 'closed') return;
        if (claimed.tasks.length > 0 && !this.send(claimed.tasks)) {
          this.close();
          return;
        }
        if (missed || this.pending.size > 0) this.again = true;
      } while (this.again);
    } catch (err) {
      failure = err;
      this.delivery.handOnFailed(reasons, err);
      throw err;
    } finally {
      if (this.state === 'claiming') {
        const pending = this.pending;
        this.pending = new Map();
        this.to('idle');
        // Idle, and in the line if it wants tasks, whichever way the loop ended.
        this.delivery.options.waiters.mayWant(this.waiter);
        if (failure === undefined) this.delivery.handOn(pending);
        else this.delivery.handOnFailed(pending, failure);
        this.pumpWhenLostDue();
      }
    }
  }

  private lostDue(): boolean {
    return this.credited && this.delivery.lostDue(this.options.agent.id);
  }

  /** Sets its timer to when its agent's lost claims fall due, a later loss having moved that since it was set. */
  private pumpWhenLostDue(): void {
    clearTimeout(this.lostTimer);
    this.lostTimer = undefined;
    const dueAt = this.delivery.lostDueAt(this.options.agent.id);
    if (dueAt === undefined) return;
    this.lostTimer = setTimeout(
      () => {
        this.lostTimer = undefined;
        this.pump();
        // Not due after all (looked for later since): wait again.
        if (this.state === 'idle') this.pumpWhenLostDue();
      },
      Math.max(0, dueAt - this.delivery.options.now()),
    );
    this.lostTimer.unref?.();
  }

  private send(tasks: Task[]): boolean {
    try {
      return this.options.send(tasks);
    } catch (err) {
      this.delivery.options.log.error({ err, agentId: this.options.agent.id }, 'sending tasks to agent failed');
      return false;
    }
  }
}
