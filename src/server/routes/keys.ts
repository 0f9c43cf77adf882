import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { FleetError, notFound } from '../../domain/errors.js';
import { ALL_NAMESPACES, NAMESPACE_PATTERN } from '../../domain/namespaces.js';
import type { ApiKey } from '../../domain/types.js';
import { reachesAll, readNamespaces } from '../namespaces.js';
import { SCOPES } from '../../domain/types.js';
import { KeySchema, keyJson, literalsOf } from '../../domain/wire.js';
import { bodyLimits, errors, type Routes } from './deps.js';

/** Longest grace a rotation may give the previous secret: 30 days. */
const MAX_GRACE_MS = 2_592_000_000;

const ExpiresAt = Type.String({ format: 'date-time', description: 'When the key stops working (ISO 8601, in the future); absent: never' });

const KeyNamespaces = Type.Array(Type.String({ pattern: `^(\\*|${NAMESPACE_PATTERN.slice(1, -1)})$` }), {
  minItems: 1,
  maxItems: 100,
  description: 'The namespaces the key reaches; ["*"]: every one, present and future. Default: those of the key that creates it.',
});

/** An ISO 8601 time from a validated body, as epoch ms. */
const epochOf = (text: string): number => Date.parse(text);

/**
 * API keys, for admins: create (the secret is in that response only), list, rotate, revoke. An admin
 * key scoped to some namespaces sees and makes only keys within them; another key is a 404 to it.
 */
export const keyRoutes: Routes = async (app, { fleet, config }) => {
  const admin = { access: 'admin' } as const;
  /** The key, if the request's credential reaches all its namespaces; else the 404 of a missing key. */
  const keyInReach = async (request: FastifyRequest, id: string): Promise<ApiKey | undefined> => {
    const key = (await fleet.credentials.list()).find((k) => k.id === id);
    if (key && !reachesAll(request, key.namespaces)) throw notFound('key', id);
    return key;
  };

  app.get(
    '/keys',
    {
      config: admin,
      schema: {
        tags: ['keys'],
        summary: 'List API keys',
        description: 'Every key, revoked ones too, oldest first: ids, names and scopes, never secrets. Needs an admin key.',
        response: { 200: Type.Object({ items: Type.Array(KeySchema) }) },
      },
    },
    async (request) => ({
      items: (await fleet.credentials.list()).filter((k) => reachesAll(request, k.namespaces)).map(keyJson),
    }),
  );

  app.post(
    '/keys',
    {
      config: admin,
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['keys'],
        summary: 'Create an API key',
        description: 'read: every GET and the event stream; submit: also submit, cancel and retry tasks, start runs, register agents; admin: everything. The secret is in this answer only (it is stored hashed). Needs an admin key.',
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 200 }),
            scope: literalsOf(SCOPES),
            namespaces: Type.Optional(KeyNamespaces),
            expiresAt: Type.Optional(ExpiresAt),
          },
          { additionalProperties: false, examples: [{ name: 'team a CI', scope: 'submit', namespaces: ['team-a'] }] },
        ),
        response: { 201: Type.Object({ key: KeySchema, secret: Type.String() }), ...errors(400, 403, 404, 413, 415) },
      },
    },
    async (request, reply) => {
      const { expiresAt, namespaces = readNamespaces(request) ?? [ALL_NAMESPACES], ...rest } = request.body;
      if (!reachesAll(request, namespaces)) {
        const beyond = namespaces.find((n) => n !== ALL_NAMESPACES && !reachesAll(request, [n]));
        // A namespace out of reach is a 404, as one that does not exist; `*` names none, so it may be refused plainly.
        if (beyond !== undefined) throw notFound('namespace', beyond);
        throw new FleetError('FLEETD_ERR_FORBIDDEN', 'only a key that reaches every namespace may create one that does ("*")', { namespaces });
      }
      const created = (await fleet.credentials.create({ ...rest, namespaces, expiresAt: expiresAt === undefined ? null : epochOf(expiresAt) }))!;
      await request.audit({
        action: 'key.created',
        target: `key:${created.key.id}`,
        details: { name: created.key.name, scope: created.key.scope, namespaces: created.key.namespaces, expiresAt: expiresAt ?? null },
      });
      // A secret must never rest in a cache between here and the admin.
      return reply.status(201).header('cache-control', 'no-store').send({ key: keyJson(created.key), secret: created.secret });
    },
  );

  app.post(
    '/keys/:id/rotate',
    {
      config: admin,
      bodyLimit: bodyLimits.control,
      // The body is optional: none means the defaults.
      preValidation: async (request) => {
        request.body ??= {};
      },
      schema: {
        tags: ['keys'],
        summary: 'Rotate an API key',
        description: `A new secret for the key (in this answer only); its id, name and scope stay. The secret it replaces keeps working for graceMs (default FLEETD_KEY_ROTATION_GRACE_MS, 24 h; at most 30 days), then answers 401 FLEETD_ERR_KEY_EXPIRED. Rotating again within the grace ends the earlier secret's grace at once. expiresAt moves the key's expiry (null: never); an expired key needs one. A revoked key answers 409. Needs an admin key.`,
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }),
        body: Type.Object(
          {
            graceMs: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_GRACE_MS })),
            expiresAt: Type.Optional(Type.Union([ExpiresAt, Type.Null()])),
          },
          { additionalProperties: false, examples: [{ graceMs: 600_000 }] },
        ),
        response: { 200: Type.Object({ key: KeySchema, secret: Type.String() }), ...errors(400, 404, 409, 413, 415) },
      },
    },
    async (request, reply) => {
      void reply.header('cache-control', 'no-store');
      const { graceMs = config.keyRotationGraceMs, expiresAt } = request.body;
      await keyInReach(request, request.params.id);
      const rotated = await fleet.credentials.rotate(request.params.id, {
        graceMs,
        expiresAt: expiresAt === undefined ? undefined : expiresAt === null ? null : epochOf(expiresAt),
      });
      const key = keyJson(rotated.key);
      await request.audit({ action: 'key.rotated', target: `key:${key.id}`, details: { graceMs, previousSecretExpiresAt: key.previousSecretExpiresAt, expiresAt: key.expiresAt } });
      return { key, secret: rotated.secret };
    },
  );

  app.delete(
    '/keys/:id',
    {
      config: admin,
      schema: {
        tags: ['keys'],
        summary: 'Revoke an API key',
        description: 'It stops working at once on this node (within 30 s on others). The last live admin key cannot be revoked (409). Needs an admin key.',
        params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }),
        response: { 200: KeySchema, ...errors(404, 409) },
      },
    },
    async (request) => {
      const target = await keyInReach(request, request.params.id);
      const isAllAdmin = (k: ApiKey) => k.scope === 'admin' && k.revokedAt === null && k.namespaces.includes(ALL_NAMESPACES);
      // Revoking the last admin key of every namespace would leave nobody able to make keys, short of the CLI on the server.
      if (target && isAllAdmin(target) && (await fleet.credentials.list()).filter(isAllAdmin).length === 1) {
        throw new FleetError('FLEETD_ERR_KEY_STATE', 'this is the last admin key that reaches every namespace: create another before revoking it', { key: target.id });
      }
      const revoked = await fleet.credentials.revoke(request.params.id);
      // Revoking a revoked key changes nothing, and records nothing.
      if (target?.revokedAt === null) await request.audit({ action: 'key.revoked', target: `key:${revoked.id}`, details: { name: revoked.name, scope: revoked.scope } });
      return keyJson(revoked);
    },
  );
};
