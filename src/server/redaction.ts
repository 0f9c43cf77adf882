import type { Logger } from 'pino';

/** What a redacted value is replaced with. */
export const REDACTED = '[redacted]';

/** How deep in a logged object a named field is still found (pino's paths name each level). */
const DEPTH = 4;

/**
 * pino's redact paths for fields of these names at any level down to DEPTH: `password`,
 * `*.password`, `*.*.password`, … Names that are not plain identifiers are quoted.
 */
export function redactPaths(fields: readonly string[]): string[] {
  const paths: string[] = [];
  for (const field of fields) {
    const name = /^[A-Za-z_$][\w$]*$/.test(field) ? field : `["${field}"]`;
    for (let depth = 0; depth <= DEPTH; depth++) paths.push(`${'*.'.repeat(depth)}${name}`.replace('.["', '["'));
  }
  return paths;
}

/** A logger that writes `[redacted]` for the named fields of whatever it logs; the same logger when there are none. */
export function redactingLogger(log: Logger, fields: readonly string[]): Logger {
  if (fields.length === 0) return log;
  return log.child({}, { redact: { paths: redactPaths(fields), censor: REDACTED } });
}

/** A URL with the values of the named query parameters replaced: a query is where a secret in a URL rides. */
export function redactUrl(url: string, fields: readonly string[]): string {
  const at = url.indexOf('?');
  if (at < 0 || fields.length === 0) return url;
  const names = new Set(fields.map((f) => f.toLowerCase()));
  const query = url
    .slice(at + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // A malformed escape is compared as it is.
      }
      return eq >= 0 && names.has(decoded.toLowerCase()) ? `${name}=${REDACTED}` : pair;
    })
    .join('&');
  return `${url.slice(0, at)}?${query}`;
}
