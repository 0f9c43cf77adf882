import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Type } from '@sinclair/typebox';
import type { FleetEvents } from '../../bus/bus.js';
import type { ActivityEntry } from '../../domain/activity.js';
import { invalid } from '../../domain/errors.js';
import { TERMINAL_STATUSES, type Task } from '../../domain/types.js';
import { SequenceSchema, activityEntryJson, taskJson } from '../../domain/wire.js';
import { readNamespaces } from '../namespaces.js';
import { RowIdParams } from '../schemas.js';
import { errors, type Routes } from './deps.js';

/** Entries read from the store at a time while replaying or catching up. */
const PAGE = 1_000;
/** A comment line this often keeps proxies from closing a quiet stream. */
const KEEPALIVE_MS = 15_000;
/** What a browser's EventSource waits before reconnecting after a drop. */
const RETRY_MS = 2_000;
/** The `id` of the closing event: a reconnect that sends it back is answered 204, which stops an EventSource for good. */
const END_ID = 'end';

type Listener = { activity(entries: ActivityEntry[]): void; ended(): void };

/** One bus subscription for every open stream: events go to the streams of their task only. */
class StreamHub {
  private readonly byTask = new Map<number, Set<Listener>>();
  private readonly offs: (() => void)[] = [];

  start(bus: import('../../bus/bus.js').Bus): void {
    this.offs.push(bus.subscribe('task.activity', ({ taskId, entries }) => this.each(taskId, (l) => l.activity(entries))));
    const ended = ({ task }: FleetEvents['task.completed']) => this.each(task.id, (l) => l.ended());
    for (const name of ['task.completed', 'task.dead', 'task.cancelled'] as const) this.offs.push(bus.subscribe(name, ended));
  }

  stop(): void {
    for (const off of this.offs.splice(0)) off();
  }

  add(taskId: number, listener: Listener): () => void {
    let set = this.byTask.get(taskId);
    if (!set) this.byTask.set(taskId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.byTask.delete(taskId);
    };
  }

  private each(taskId: number, call: (l: Listener) => void): void {
    const set = this.byTask.get(taskId);
    if (set) for (const listener of set) call(listener);
  }
}

/** Where a stream starts: after Last-Event-ID (a reconnect) or ?since=, else from the beginning. */
function startAfter(header: string | string[] | undefined, since: number | undefined): number | 'ended' {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value === '') return since ?? 0;
  if (value === END_ID) return 'ended';
  if (!/^\d{1,15}$/.test(value)) throw invalid('last-event-id', 'must be the id of an event this stream sent', { header: 'last-event-id' });
  return Number(value);
}

/**
 * `GET /v1/tasks/:id/stream`: a task's activity as Server-Sent Events. What is retained is replayed
 * from the store, then what arrives live follows (by the bus, from any node), then the terminal
 * task with its result, and the stream closes. Every entry's event id is its sequence number: a
 * reconnect with Last-Event-ID resumes after it; an entry that would leave a hole (a live event
 * ahead of what was sent) makes the stream read the hole from the store first, so nothing is
 * skipped or sent twice.
 */
export const taskStreamRoutes: Routes = async (app, { fleet, config }) => {
  const hub = new StreamHub();
  const open = new Set<ServerResponse>();
  app.addHook('onReady', async () => hub.start(fleet.bus));
  app.addHook('preClose', async () => {
    hub.stop();
    for (const res of open) res.end();
  });

  app.get(
    '/tasks/:id/stream',
    {
      config: { tokenInQuery: true },
      schema: {
        tags: ['tasks'],
        summary: "A task's progress, log and output as Server-Sent Events",
        description:
          'text/event-stream: events progress, log and output (data: the entry as GET /v1/tasks/:id/logs answers it, id: its sequence number), replaying what is retained, then live; then end (data: {task}, the task with its result) once the task is completed, dead or cancelled, and the stream closes. Resumes after Last-Event-ID (or ?since=); a reconnect after end gets 204. ?token= for clients that cannot set Authorization (a browser EventSource).',
        params: RowIdParams,
        querystring: Type.Object(
          { since: Type.Optional(SequenceSchema), token: Type.Optional(Type.String({ maxLength: 200 })) },
          { additionalProperties: false },
        ),
        response: { 200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: Type.String() } } }, 204: Type.Null(), ...errors(400, 404) },
      },
    },
    async (request, reply) => {
      const id = request.params.id;
      const after = startAfter(request.headers['last-event-id'], request.query.since);
      if (after === 'ended') return reply.status(204).send(null);
      // Another node's activity and end reach this one only while asked for (Bus.hearAll): asked
      // before the task is read, so that an end after the read is heard.
      const giveBack = (await fleet.bus.hearAll?.()) ?? (async () => {});
      let task: Task;
      try {
        // A task's namespace never changes: what the request may see is settled here, once.
        task = await fleet.tasks.get(id, readNamespaces(request));
      } catch (err) {
        void giveBack();
        throw err;
      }
      // Listening before reading: whatever happens from here is seen live or read, never lost between.
      let sent = after;
      let closed = false;
      let ending = TERMINAL_STATUSES.has(task.status);
      let work = Promise.resolve();
      const res = reply.raw;
      const queue = (step: () => Promise<void> | void) => {
        work = work.then(async () => {
          if (!closed) await step();
        }).catch((err: unknown) => {
          request.log.error({ err, taskId: id }, 'task stream failed');
          close();
        });
      };
      const write = (text: string) => {
        res.write(text);
        // A reader that does not keep up is cut off rather than buffered for without bound.
        if (res.writableLength > config.wsMaxBufferedBytes) close();
      };
      const send = (entries: ActivityEntry[]) => {
        let text = '';
        for (const entry of entries) {
          if (entry.seq <= sent) continue;
          text += `id: ${entry.seq}\nevent: ${entry.kind}\ndata: ${JSON.stringify(activityEntryJson(entry))}\n\n`;
          sent = entry.seq;
        }
        if (text !== '') write(text);
      };
      const catchUp = async () => {
        for (;;) {
          const tail = await fleet.activity.tail({ id, since: sent, limit: PAGE });
          send(tail.entries);
          if (!tail.more || closed) return;
        }
      };
      const end = async () => {
        await catchUp();
        const finished: Task = await fleet.tasks.get(id);
        write(`id: ${END_ID}\nevent: end\ndata: ${JSON.stringify({ task: taskJson(finished) })}\n\n`);
        close();
      };
      const keepalive = setInterval(() => write(': keepalive\n\n'), KEEPALIVE_MS);
      keepalive.unref();
      const unlisten = hub.add(id, {
        activity: (entries) =>
          queue(async () => {
            // Ahead of what was sent (another node's event overtook one, or the replay is still running): read the hole first.
            if (entries.length > 0 && entries[0].seq > sent + 1) await catchUp();
            send(entries);
          }),
        ended: () => {
          if (ending) return;
          ending = true;
          queue(end);
        },
      });
      function close() {
        if (closed) return;
        closed = true;
        clearInterval(keepalive);
        unlisten();
        void giveBack();
        open.delete(res);
        res.end();
      }
      res.once('close', close);

      reply.hijack();
      // Gone while the task was read: its 'close' has passed.
      if (res.socket === null || res.socket.destroyed) return close();
      res.writeHead(200, {
        // What the hooks set (security headers, rate limits): a hijacked reply does not send them itself.
        ...(reply.getHeaders() as OutgoingHttpHeaders),
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        // Proxies such as nginx would otherwise buffer the stream.
        'x-accel-buffering': 'no',
      });
      open.add(res);
      res.write(`retry: ${RETRY_MS}\n\n`);
      queue(catchUp);
      if (ending) queue(end);
    },
  );
};
