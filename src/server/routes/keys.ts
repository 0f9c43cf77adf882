import { Type } from '@sinclair/typebox';
import { FleetError } from '../../domain/errors.js';
import { SCOPES } from '../../domain/types.js';
import { KeySchema, keyJson, literalsOf } from '../../domain/wire.js';
import { bodyLimits, errors, type Routes } from './deps.js';

/** API keys, for admins: create (the secret is in that response only), list, revoke. */
export const keyRoutes: Routes = async (app, { fleet }) => {
  const admin = { access: 'admin' } as const;

  app.get('/keys', { config: admin, schema: { response: { 200: Type.Object({ items: Type.Array(KeySchema) }) } } }, async () => ({
    items: (await fleet.credentials.list()).map(keyJson),
  }));

  app.post(
    '/keys',
    {
      config: admin,
      bodyLimit: bodyLimits.control,
      schema: {
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 200 }),
            scope: literalsOf(SCOPES),
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Object({ key: KeySchema, secret: Type.String() }), ...errors(400, 413, 415) },
      },
    },
    async (request, reply) => {
      const created = (await fleet.credentials.create(request.body))!;
      return reply.status(201).send({ key: keyJson(created.key), secret: created.secret });
    },
  );

  app.delete(
    '/keys/:id',
    {
      config: admin,
      schema: { params: Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) }), response: { 200: KeySchema, ...errors(404, 409) } },
    },
    async (request) => {
      const keys = await fleet.credentials.list();
      const target = keys.find((k) => k.id === request.params.id);
      const liveAdmins = keys.filter((k) => k.scope === 'admin' && k.revokedAt === null);
      // Revoking the last admin key would leave nobody able to make keys, short of the CLI on the server.
      if (target?.scope === 'admin' && target.revokedAt === null && liveAdmins.length === 1) {
        throw new FleetError('FLEETD_ERR_KEY_STATE', 'this is the last admin key: create another admin key before revoking it', { key: target.id });
      }
      return keyJson(await fleet.credentials.revoke(request.params.id));
    },
  );
};
