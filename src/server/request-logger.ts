import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions, LogFn } from 'pino';

const call = (fn: LogFn, logger: FastifyBaseLogger, args: unknown[]): void => Reflect.apply(fn, logger, args);

/**
 * A request's logger, made only when the request logs. Fastify gives every request a child of the
 * server's logger (bound to its reqId); pino makes a child by serialising the bindings and, with
 * redaction on, preparing the redaction again: a twentieth of a heartbeat's CPU, for a logger that
 * all but the slow or failing requests never use.
 */
class LazyRequestLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;
  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private get real(): FastifyBaseLogger {
    this.made ??= this.parent.child(this.bindings, this.options);
    return this.made;
  }
  get level(): string {
    return this.made?.level ?? this.parent.level;
  }
  set level(level: string) {
    this.real.level = level;
  }
  fatal(...args: unknown[]): void {
    call(this.real.fatal, this.real, args);
  }
  error(...args: unknown[]): void {
    call(this.real.error, this.real, args);
  }
  warn(...args: unknown[]): void {
    call(this.real.warn, this.real, args);
  }
  info(...args: unknown[]): void {
    call(this.real.info, this.real, args);
  }
  debug(...args: unknown[]): void {
    call(this.real.debug, this.real, args);
  }
  trace(...args: unknown[]): void {
    call(this.real.trace, this.real, args);
  }
  silent(): void {}
  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.real.child(bindings, options);
  }
}

export const lazyRequestLogger = (logger: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger => new LazyRequestLogger(logger, bindings, options);
