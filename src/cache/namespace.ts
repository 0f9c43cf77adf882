import { createHash } from 'node:crypto';
import { resolve as resolvePath } from 'node:path';
import type { FleetdConfig } from '../config.js';

/**
 * The cache namespace of a fleet: nodes share cached responses (through the Redis L2) only when
 * they share a store, so the namespace names the store. An embedded SQLite store belongs to one
 * node and is named by its folder; a PostgreSQL store by its database and schema, so that two
 * fleets sharing one Redis never read each other's entries. The password is left out: rotating it
 * changes no data, and it does not belong in Redis keys. Hashed, to keep host names out of keys too.
 */
export function cacheNamespace(config: Pick<Readonly<FleetdConfig>, 'databaseUrl' | 'databaseSchema' | 'dataDir'>): string {
  const identity = config.databaseUrl === '' ? resolvePath(config.dataDir) : `${databaseIdentity(config.databaseUrl)}#${config.databaseSchema}`;
  return createHash('sha256').update(identity).digest('base64url').slice(0, 16);
}

/** The database a URL points at, without its password; an omitted port is PostgreSQL's default. */
function databaseIdentity(databaseUrl: string): string {
  const url = new URL(databaseUrl);
  url.password = '';
  if (url.port === '') url.port = '5432';
  url.protocol = 'postgres:';
  return url.href;
}
