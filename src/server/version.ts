import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** fleetd's version, from its package.json (two levels up from src/server and from dist/server alike). */
export const FLEETD_VERSION: string = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')).version;
