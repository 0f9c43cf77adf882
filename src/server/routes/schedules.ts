import { Type } from '@sinclair/typebox';
import { ScheduleSchema, pageOf, scheduleJson } from '../../domain/wire.js';
import { Namespace, Pagination, ScheduleInputSchema } from '../schemas.js';
import { readNamespaces, writeNamespace } from '../namespaces.js';
import { bodyLimits, errors, type Routes } from './deps.js';

const ScheduleName = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) });
/**
 * A schedule is named within its namespace: a route by name looks in the one the request names, or
 * the one its credential writes to (see server/namespaces.ts); another namespace's is not found.
 */
const InNamespace = Type.Object({ namespace: Type.Optional(Namespace) }, { additionalProperties: false });
const example = { name: 'nightly-crawl', cron: '0 2 * * *', timezone: 'Europe/Berlin', task: { type: 'crawl', payload: { site: 'acme.com' } }, overlap: 'skip', catchUp: 'latest' };

/** Recurring schedules (core/schedules.ts): each fire submits its task once, cluster-wide. */
export const scheduleRoutes: Routes = async (app, { fleet }) => {
  app.post(
    '/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Create a recurring schedule',
        description:
          'Submits `task` at every fire time of `cron` (5 fields, or 6 with seconds first) in `timezone` (UTC by default), exactly once across nodes: the task\'s idempotency key is schedule:<name>:<fire time> (schedule:<namespace>/<name>:<fire time> outside the default namespace). The schedule, and every task it fires, belongs to the namespace named (a key reaching one namespace: that one); names are unique per namespace. overlap skip (the default) passes a fire over while the previous fire\'s task is unfinished; catchUp (latest by default) says which fires missed while no node ran are submitted: none, the latest, or all (bounded). 409 FLEETD_ERR_SCHEDULE_EXISTS when the name is taken.',
        body: { ...ScheduleInputSchema, examples: [example] },
        response: { 201: ScheduleSchema, ...errors(400, 404, 409, 413, 415) },
      },
    },
    async (request, reply) => {
      const { namespace, ...input } = request.body;
      const schedule = await fleet.schedules.create({ ...input, namespace: writeNamespace(request, namespace) });
      await request.audit({
        action: 'schedule.created',
        target: `schedule:${schedule.name}`,
        details: { namespace: schedule.namespace, cron: schedule.cron, timezone: schedule.timezone, type: schedule.task.type },
      });
      return reply.status(201).send(scheduleJson(schedule));
    },
  );

  app.get(
    '/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: 'List schedules',
        description:
          'Schedules of the namespaces the credential reaches (or of the one named), oldest first, each with its next fire times; a page of up to limit, and nextCursor for the next page.',
        querystring: Type.Object({ namespace: Type.Optional(Namespace), ...Pagination }, { additionalProperties: false }),
        response: { 200: pageOf(ScheduleSchema), ...errors(400, 404) },
      },
    },
    async (request) => {
      const { namespace, ...query } = request.query;
      const page = await fleet.schedules.list({ ...query, namespaces: readNamespaces(request, namespace) });
      return { items: page.items.map(scheduleJson), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/schedules/:name',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Get a schedule',
        description: 'With its next fire times (none while paused).',
        params: ScheduleName,
        querystring: InNamespace,
        response: { 200: ScheduleSchema, ...errors(400, 404) },
      },
    },
    async (request) => scheduleJson(await fleet.schedules.get(writeNamespace(request, request.query.namespace), request.params.name)),
  );

  app.delete(
    '/schedules/:name',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Delete a schedule',
        description: 'It fires no more; tasks it submitted stay.',
        params: ScheduleName,
        querystring: InNamespace,
        response: { 200: ScheduleSchema, ...errors(400, 404) },
      },
    },
    async (request) => {
      const schedule = await fleet.schedules.delete(writeNamespace(request, request.query.namespace), request.params.name);
      await request.audit({ action: 'schedule.deleted', target: `schedule:${schedule.name}`, details: { namespace: schedule.namespace } });
      return scheduleJson(schedule);
    },
  );

  for (const action of ['pause', 'resume'] as const) {
    app.post(
      `/schedules/:name/${action}`,
      {
        bodyLimit: bodyLimits.control,
        schema: {
          tags: ['schedules'],
          summary: action === 'pause' ? 'Pause a schedule' : 'Resume a schedule',
          description:
            action === 'pause'
              ? 'It fires no more until resumed. Pausing a paused schedule changes nothing.'
              : 'It fires again from its next fire time after now; fires passed while paused are not caught up.',
          params: ScheduleName,
          querystring: InNamespace,
          response: { 200: ScheduleSchema, ...errors(400, 404) },
        },
      },
      async (request) => scheduleJson(await fleet.schedules.setPaused(writeNamespace(request, request.query.namespace), request.params.name, action === 'pause')),
    );
  }
};
