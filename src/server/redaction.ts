import { symbols, type Logger } from 'pino';

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

/**
 * Fastify's child logger of a request (its default is `logger.child(bindings, options)`), made
 * without running the bindings through the redaction: with its wildcard paths pino passes every
 * binding value through it (about 10 µs a request), yet a request's bindings are its id, a string
 * under a name that is not redacted, so nothing in them can be. Bindings of another kind, a name
 * that is redacted, or options (a route's log level) take pino's own way.
 */
export function requestLoggerFactory(fields: readonly string[]) {
  const redacted = new Set(fields);
  return (logger: Logger, bindings: Record<string, unknown>, options?: object): Logger => {
    const names = Object.keys(bindings);
    if ((options && Object.keys(options).length > 0) || names.some((k) => typeof bindings[k] !== 'string' || redacted.has(k))) {
      return logger.child(bindings, options);
    }
    const child = logger.child({});
    const chindings = child as unknown as Record<symbol, string>;
    for (const k of names) chindings[symbols.chindingsSym] += `,${JSON.stringify(k)}:${JSON.stringify(bindings[k])}`;
    return child;
  };
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
