import { parseArgs } from 'node:util';
import { LocalBus } from '../bus/local-bus.js';
import { ConfigError, resolveConfig, type FleetdConfig } from '../config.js';
import { AuditLog } from '../core/audit.js';
import { CredentialService } from '../core/credentials.js';
import { FleetError } from '../domain/errors.js';
import { SCOPES, type Scope } from '../domain/types.js';
import { openExistingDriver } from '../server/startup.js';

export const keysUsage = `Usage:
  npx fleetd keys create --scope admin|submit|read [--name NAME] [--expires-at ISO-8601]
                         [--namespaces team-a,team-b]               prints the new key once; it reaches
                                                                    the namespaces named (default: all, *)
  npx fleetd keys list                                              ids, names, scopes, namespaces, expiry;
                                                                    never secrets
  npx fleetd keys rotate ID [--grace-ms MS] [--expires-at ISO-8601|never]
                                                                    prints the key's new secret once; the old
                                                                    one works for MS more (FLEETD_KEY_ROTATION_GRACE_MS)
  npx fleetd keys revoke ID
Options of every keys command: [--data-dir DIR] [--config FILE] (or FLEETD_DATABASE_URL for PostgreSQL).
Works on the store of a server that has started at least once, beside it while it runs: a new key
works at once, a revoked one stops working within 30 s (at once through DELETE /v1/keys/ID). It
never makes a store: run it where \`npx fleetd start\` runs, or name the same --data-dir.`;

/** An ISO 8601 time given on the command line, as epoch ms. */
function timeOf(flag: string, text: string): number {
  const ms = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(ms)) throw new ConfigError(flag, `"${text}" is not an ISO 8601 time, e.g. 2027-06-30T00:00:00Z`);
  return ms;
}

/** `fleetd keys`: API keys made, listed and revoked on the store itself, for the operator on the server. */
export async function runKeys(argv: string[]): Promise<void> {
  const { values, positionals: [command, ...positionals] } = parseArgs({
    args: argv,
    options: {
      scope: { type: 'string' },
      name: { type: 'string' },
      'expires-at': { type: 'string' },
      namespaces: { type: 'string' },
      'grace-ms': { type: 'string' },
      'data-dir': { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(`${keysUsage}\n`);
    return;
  }
  if (!['create', 'list', 'rotate', 'revoke'].includes(command)) throw new ConfigError(`keys ${command}`, `is not a keys command\n\n${keysUsage}`);
  const overrides: Partial<FleetdConfig> = values['data-dir'] === undefined ? {} : { dataDir: values['data-dir'] };
  const env = values.config === undefined ? process.env : { ...process.env, FLEETD_CONFIG: values.config };
  const config = resolveConfig(overrides, env);
  const driver = await openExistingDriver(config);
  const store = driver.store;
  const bus = new LocalBus(() => {});
  const credentials = new CredentialService({ store, bus, now: Date.now });
  // What the operator does here is audited as the API's acts are, by "cli" with no address.
  const audit = new AuditLog({ store, now: Date.now, log: { info() {}, warn() {}, error: (obj, msg) => process.stderr.write(`${msg}: ${JSON.stringify(obj)}\n`) } });
  try {
    switch (command) {
      case 'create': {
        const scope = values.scope as Scope | undefined;
        if (scope === undefined || !SCOPES.includes(scope)) throw new ConfigError('--scope', `give one of ${SCOPES.join(', ')}`);
        const expiresAt = values['expires-at'] === undefined ? null : timeOf('--expires-at', values['expires-at']);
        const namespaces = values.namespaces?.split(',').map((n) => n.trim());
        const created = (await credentials.create({ name: values.name ?? `${scope} key`, scope, namespaces, expiresAt }))!;
        await audit.record({
          actor: 'cli',
          action: 'key.created',
          target: `key:${created.key.id}`,
          details: { name: created.key.name, scope, namespaces: created.key.namespaces, expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString() },
        });
        process.stdout.write(`${created.secret}\n`);
        process.stderr.write(`created ${created.key.id} (${created.key.scope} in ${created.key.namespaces.join(',')}, "${created.key.name}"): the key above is shown this once; only its hash is stored\n`);
        return;
      }
      case 'list':
        for (const k of await credentials.list()) {
          const now = Date.now();
          const state = k.revokedAt !== null ? `revoked ${new Date(k.revokedAt).toISOString()}`
            : k.expiresAt === null ? 'live'
            : `${k.expiresAt <= now ? 'expired' : 'expires'} ${new Date(k.expiresAt).toISOString()}`;
          process.stdout.write(`${k.id}\t${k.scope}\t${k.namespaces.join(',')}\t${new Date(k.createdAt).toISOString()}\t${state}\t${k.name}\n`);
        }
        return;
      case 'rotate': {
        if (positionals.length !== 1) throw new ConfigError('rotate', 'give the id of one key (see npx fleetd keys list)');
        const grace = values['grace-ms'];
        const graceMs = grace === undefined ? config.keyRotationGraceMs : Number(grace);
        if (!Number.isSafeInteger(graceMs) || graceMs < 0) throw new ConfigError('--grace-ms', `"${grace}" is not a whole number of milliseconds`);
        const given = values['expires-at'];
        const expiresAt = given === undefined ? undefined : given === 'never' ? null : timeOf('--expires-at', given);
        const rotated = await credentials.rotate(positionals[0], { graceMs, expiresAt });
        const previousSecretExpiresAt = new Date(rotated.key.previousSecretExpiresAt!).toISOString();
        await audit.record({ actor: 'cli', action: 'key.rotated', target: `key:${rotated.key.id}`, details: { graceMs, previousSecretExpiresAt } });
        process.stdout.write(`${rotated.secret}\n`);
        process.stderr.write(
          `rotated ${rotated.key.id} (${rotated.key.scope}, "${rotated.key.name}"): the key above is shown this once; the previous one works until ${previousSecretExpiresAt}\n`,
        );
        return;
      }
      case 'revoke': {
        if (positionals.length !== 1) throw new ConfigError('revoke', 'give the id of one key (see npx fleetd keys list)');
        const key = await credentials.revoke(positionals[0]);
        await audit.record({ actor: 'cli', action: 'key.revoked', target: `key:${key.id}`, details: { name: key.name, scope: key.scope } });
        process.stdout.write(`revoked ${key.id} (${key.scope}, "${key.name}")\n`);
        return;
      }
    }
  } catch (err) {
    if (err instanceof FleetError) throw new ConfigError(`keys ${command}`, err.message);
    throw err;
  } finally {
    await bus.close();
    await driver.close();
  }
}
