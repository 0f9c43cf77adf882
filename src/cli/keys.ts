import { parseArgs } from 'node:util';
import { LocalBus } from '../bus/local-bus.js';
import { ConfigError, resolveConfig, type FleetdConfig } from '../config.js';
import { CredentialService } from '../core/credentials.js';
import { FleetError } from '../domain/errors.js';
import { SCOPES, type Scope } from '../domain/types.js';
import { openDriver } from '../store/open-driver.js';

export const keysUsage = `Usage:
  fleetd keys create --scope admin|submit|read [--name NAME]   prints the new key once
  fleetd keys list                                              ids, names, scopes; never secrets
  fleetd keys revoke ID
Options of every keys command: [--data-dir DIR] [--config FILE] (or FLEETD_DATABASE_URL for PostgreSQL).
Works on the store directly, beside a running server: a new key works at once, a revoked one
stops working within 30 s (at once through DELETE /v1/keys/ID).`;

/** `fleetd keys`: API keys made, listed and revoked on the store itself, for the operator on the server. */
export async function runKeys(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      scope: { type: 'string' },
      name: { type: 'string' },
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
  const overrides: Partial<FleetdConfig> = values['data-dir'] === undefined ? {} : { dataDir: values['data-dir'] };
  const env = values.config === undefined ? process.env : { ...process.env, FLEETD_CONFIG: values.config };
  const config = resolveConfig(overrides, env);
  const driver = openDriver(config);
  await driver.migrate();
  const store = driver.store;
  const bus = new LocalBus(() => {});
  const credentials = new CredentialService({ store, bus, now: Date.now });
  try {
    switch (command) {
      case 'create': {
        const scope = values.scope as Scope | undefined;
        if (scope === undefined || !SCOPES.includes(scope)) throw new ConfigError('--scope', `give one of ${SCOPES.join(', ')}`);
        const created = (await credentials.create({ name: values.name ?? `${scope} key`, scope }))!;
        process.stdout.write(`${created.secret}\n`);
        process.stderr.write(`created ${created.key.id} (${created.key.scope}, "${created.key.name}"): the key above is shown this once; only its hash is stored\n`);
        return;
      }
      case 'list':
        for (const k of await credentials.list()) {
          const state = k.revokedAt === null ? 'live' : `revoked ${new Date(k.revokedAt).toISOString()}`;
          process.stdout.write(`${k.id}\t${k.scope}\t${new Date(k.createdAt).toISOString()}\t${state}\t${k.name}\n`);
        }
        return;
      case 'revoke': {
        if (positionals.length !== 1) throw new ConfigError('revoke', 'give the id of one key (see fleetd keys list)');
        const key = await credentials.revoke(positionals[0]);
        process.stdout.write(`revoked ${key.id} (${key.scope}, "${key.name}")\n`);
        return;
      }
      default:
        throw new ConfigError(`keys ${command}`, `is not a keys command\n\n${keysUsage}`);
    }
  } catch (err) {
    if (err instanceof FleetError) throw new ConfigError(`keys ${command}`, err.message);
    throw err;
  } finally {
    await bus.close();
    await driver.close();
  }
}
