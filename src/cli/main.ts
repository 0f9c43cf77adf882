#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, describeSettings, type FleetdConfig } from '../config.js';
import { startServer } from '../server/server.js';
import { StartupError } from '../server/startup.js';
import { runBackup, runRestore } from './backup.js';
import { runDemoAgent } from './demo-agent.js';
import { runMigrate } from './migrate.js';
import { runKeys } from './keys.js';

const usage = `fleetd — orchestration server for fleets of AI agents

Usage (in a clone, through npx; \`npm link\` once puts fleetd itself on your PATH):
  npx fleetd start [--port N] [--host H] [--data-dir DIR] [--config FILE] [--no-auth] [--tls-cert FILE --tls-key FILE]
  npx fleetd keys create --scope admin|submit|read [--name NAME]   make an API key (shown once)
  npx fleetd keys list                                             ids, names, scopes; never secrets
  npx fleetd keys revoke ID                                        (npx fleetd keys --help)
  npx fleetd agent [--url URL] [--api-key KEY] [--capabilities echo,sleep] [--concurrency N]   (npx fleetd agent --help)
  npx fleetd backup --to FILE [--data-dir DIR]                     online backup of the SQLite store
  npx fleetd restore FILE [--data-dir DIR]                         the server stopped (npx fleetd backup --help)
  npx fleetd migrate --to postgres://… [--schema S] [--data-dir DIR]   copy the SQLite store into PostgreSQL

On its first start fleetd makes an admin API key and prints it once (or stores FLEETD_ADMIN_KEY).
Every /v1 request then needs "Authorization: Bearer <key>"; --no-auth turns that off, for local
experiments only.

Settings: flags override FLEETD_* environment variables, which override the settings of
./fleetd.config.json (or of the file --config or FLEETD_CONFIG names: a JSON object of settings by
name, e.g. {"port": 8080}), which override the defaults:`;

function help(): string {
  const rows = describeSettings().map((s) => `  ${s.env.padEnd(28)} ${s.key.padEnd(20)} default ${JSON.stringify(s.default)}`);
  return `${usage}\n${rows.join('\n')}\n`;
}

async function start(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'data-dir': { type: 'string' },
      config: { type: 'string' },
      'no-auth': { type: 'boolean' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(help());
    return;
  }
  const overrides: Partial<FleetdConfig> = {};
  if (values.port !== undefined) overrides.port = values.port as unknown as number;
  if (values.host !== undefined) overrides.host = values.host;
  if (values['data-dir'] !== undefined) overrides.dataDir = values['data-dir'];
  if (values['no-auth']) overrides.auth = 'off';
  if (values['tls-cert'] !== undefined) overrides.tlsCert = values['tls-cert'];
  if (values['tls-key'] !== undefined) overrides.tlsKey = values['tls-key'];
  const env = values.config === undefined ? process.env : { ...process.env, FLEETD_CONFIG: values.config };
  const server = await startServer(overrides, { env });
  if (server.firstAdminKey) {
    // Printed, never logged: this is the key's only appearance, and log files travel.
    process.stderr.write(
      `\nfleetd made its first admin API key. It is shown this once and stored hashed; keep it:\n\n  ${server.firstAdminKey}\n\n` +
        'Send it as "Authorization: Bearer <key>". Make narrower keys with: npx fleetd keys create --scope submit|read\n\n',
    );
  }
  server.app.log.info(
    { url: server.url, store: server.store.driver, dataDir: server.config.dataDir, auth: server.config.auth },
    'fleetd is listening',
  );
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.app.log.info({ signal }, 'shutting down');
    // Bounded: a request or write that hangs must not keep the process alive past the timeout.
    const force = setTimeout(() => {
      server.app.log.error({ timeoutMs: server.config.shutdownTimeoutMs }, 'shutdown timed out; exiting');
      process.exit(1);
    }, server.config.shutdownTimeoutMs);
    force.unref();
    server.close().then(
      () => process.exit(0),
      (err) => {
        server.app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'start':
      return start(rest);
    case 'agent':
      return runDemoAgent(rest);
    case 'keys':
      return runKeys(rest);
    case 'backup':
      return runBackup(rest);
    case 'restore':
      return runRestore(rest);
    case 'migrate':
      return runMigrate(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(help());
      return;
    default:
      process.stderr.write(`fleetd: unknown command "${command}"\n\n${help()}`);
      process.exitCode = 2;
  }
}

main().catch((err) => {
  if (err instanceof StartupError) {
    // The operator's problem, not a bug: one line that names it and the fix, and no stack.
    process.stderr.write(`fleetd: ${err.message}\n`);
    process.exit(1);
  }
  if (err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`fleetd: ${(err as Error).message}\n`);
  } else {
    process.stderr.write(`fleetd: ${(err as Error).stack ?? err}\n`);
  }
  process.exit(2);
});
