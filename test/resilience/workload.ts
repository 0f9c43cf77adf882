import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { TestContext } from 'node:test';
import { FleetClient, type FleetAgent, type TaskJson } from '../../src/client/index.js';
import { eventually } from '../helpers.js';
import type { NodeProcess } from '../cluster/node-process.js';

/** One HTTP answer a submitter got. */
interface Answer {
  at: number;
  /** How long the answer took, in ms. */
  ms: number;
  node: number;
  status: number;
  retryAfter: string | null;
}

/** What a fault cost, as the submitters saw it. */
export interface FaultReport {
  fault: string;
  /** Submits answered 503 between the fault and recovery. */
  refused: number;
  /** From the first refused submit to the last, in seconds (0 when none was refused). */
  refusedSeconds: number;
  /** From the service's return to the first submit accepted on each node, in seconds (0 if they never stopped working). */
  recoverySeconds: number[];
  /** The slowest submit answer from the fault to recovery, in seconds. */
  slowestSubmitSeconds: number;
  /** Requests of any kind (agents' included) the nodes answered 503 meanwhile, from their metrics. */
  refusedByNodes: number;
}

/**
 * Continuous work on two nodes: a submitter per node sends one task at a time (each under an
 * idempotency key, resent on a 503 after 100 ms, finer than Retry-After's whole seconds so that
 * the outage is measured to the tenth), and an SDK agent per node, on a WebSocket, claims and
 * completes them. Tasks carry a 60 s lease, longer than any fault here lasts: no lease expires
 * during a fault, so a task that ran twice would mean fleetd handed it out twice.
 */
export class Workload {
  readonly acknowledged = new Map<string, number>();
  /** How many times a handler ran each task. */
  readonly runs = new Map<number, number>();
  readonly answers: Answer[] = [];
  /** Errors the SDK agents met that no outage explains (a 500, say). */
  readonly agentFailures: string[] = [];
  private readonly agents: FleetAgent[] = [];
  private running = false;
  private submitters: Promise<void>[] = [];

  /** `completedAmong` reads the database: which of these tasks are completed. */
  constructor(
    private readonly nodes: NodeProcess[],
    private readonly adminKey: string,
    private readonly completedAmong: (ids: number[]) => Promise<number[]>,
    private readonly refusedByNodes: () => Promise<number>,
  ) {}

  async start(): Promise<void> {
    this.running = true;
    for (const [i, node] of this.nodes.entries()) {
      const agent = new FleetClient({ url: node.url, apiKey: this.adminKey }).agent({
        name: `worker-${i}`,
        capabilities: ['work'],
        concurrency: 4,
        transport: 'ws',
        reconnect: { minMs: 100, maxMs: 1_000 },
      });
      agent.on('error', (err: { status?: number; code?: string; message: string }) => {
        if (err.status === 500 || err.code === 'FLEETD_ERR_INTERNAL') this.agentFailures.push(`node ${i}: ${err.message}`);
      });
      await agent.work((task: TaskJson) => {
        this.runs.set(task.id, (this.runs.get(task.id) ?? 0) + 1);
        return { by: i };
      });
      this.agents.push(agent);
    }
    this.submitters = this.nodes.map((node, i) => this.submitLoop(node, i));
  }

  private async submitLoop(node: NodeProcess, i: number): Promise<void> {
    while (this.running) {
      const key = `work-${randomUUID()}`;
      // The same key until a node accepts it, or the workload stops: a node that answers 503 for
      // ever (its database never came back after a failed fault) must not hold up the cleanup.
      while (this.running) {
        const at = Date.now();
        let res: Response;
        try {
          res = await fetch(`${node.url}/v1/tasks`, {
            method: 'POST',
            headers: { authorization: `Bearer ${this.adminKey}`, 'content-type': 'application/json' },
            body: JSON.stringify({ type: 'work', idempotencyKey: key, leaseMs: 60_000 }),
          });
        } catch (err) {
          // The node did not answer at all: recorded as status 0, which no assertion tolerates.
          this.answers.push({ at, ms: Date.now() - at, node: i, status: 0, retryAfter: String(err) });
          await sleep(100);
          continue;
        }
        const body = (await res.json()) as { task?: { id: number } };
        this.answers.push({ at, ms: Date.now() - at, node: i, status: res.status, retryAfter: res.headers.get('retry-after') });
        if (res.status === 201 || res.status === 200) {
          this.acknowledged.set(key, body.task!.id);
          break;
        }
        await sleep(100);
      }
      await sleep(20);
    }
  }

  /**
   * Runs `fault` (which resolves when the service is back) under the workload, then checks what every
   * fault must leave true and returns what it cost.
   */
  async survive(t: TestContext, name: string, fault: () => Promise<void>): Promise<FaultReport> {
    const from = this.answers.length;
    await eventually(() => this.acknowledged.size > 0 && this.answersSince(from).filter((a) => a.status === 201).length >= 10, 20_000, 'submits before the fault');
    const refusedBefore = await this.refusedByNodes();
    await fault();
    const returnedAt = Date.now();
    // Submits work again on both nodes within 5 s of the service's return.
    const recovery = await Promise.all(
      this.nodes.map(async (_node, i) => {
        await eventually(() => this.answersSince(from).some((a) => a.node === i && a.at >= returnedAt && a.status === 201), 5_000, `a submit accepted on node ${i} within 5 s`);
        const stopped = this.answersSince(from).some((a) => a.node === i && a.status !== 201);
        return stopped ? (this.answersSince(from).find((a) => a.node === i && a.at >= returnedAt && a.status === 201)!.at - returnedAt) / 1000 : 0;
      }),
    );
    // A few more seconds of work after the return, then every acknowledged task must complete.
    const settled = this.answers.length;
    await eventually(() => this.answersSince(settled).filter((a) => a.status === 201).length >= 20, 20_000, 'submits after the fault');
    const answers = this.answersSince(from);
    const refused = answers.filter((a) => a.status === 503);
    const report: FaultReport = {
      fault: name,
      refused: refused.length,
      refusedSeconds: refused.length === 0 ? 0 : (refused.at(-1)!.at - refused[0].at) / 1000,
      recoverySeconds: recovery,
      slowestSubmitSeconds: Math.max(...answers.map((a) => a.ms)) / 1000,
      refusedByNodes: (await this.refusedByNodes()) - refusedBefore,
    };
    t.diagnostic(
      `${name}: ${report.refused} submits refused (503) over ${report.refusedSeconds.toFixed(1)} s, ${report.refusedByNodes} requests of all kinds refused by the nodes; ` +
        `submits accepted again ${recovery.map((s) => s.toFixed(1)).join(' s and ')} s after the return; slowest submit ${report.slowestSubmitSeconds.toFixed(1)} s`,
    );
    const ids = [...this.acknowledged.values()];
    await eventually(async () => (await this.completedAmong(ids)).length === ids.length, 30_000, 'every acknowledged task completed');
    assert.deepEqual([...this.runs].filter(([, n]) => n > 1), [], 'no task was handed out twice, so none completed twice');
    const unexpected = answers.filter((a) => a.status !== 201 && a.status !== 200 && a.status !== 503);
    assert.deepEqual(unexpected, [], 'every submit was accepted or refused with a 503');
    assert.deepEqual(refused.filter((a) => a.retryAfter === null), [], 'every 503 carried Retry-After');
    assert.deepEqual(this.agentFailures, [], 'the agents met no internal error');
    for (const [i, node] of this.nodes.entries()) assert.equal(node.child.exitCode ?? node.child.signalCode, null, `node ${i} is alive`);
    return report;
  }

  private answersSince(index: number): Answer[] {
    return this.answers.slice(index);
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.submitters);
    await Promise.all(this.agents.map((a) => a.stop({ timeoutMs: 1_000 })));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
