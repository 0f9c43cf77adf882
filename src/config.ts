import { existsSync, readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';

/**
 * fleetd's configuration: one typed object. Every field documents its unit and default; values come
 * from defaults, then the optional fleetd.config.json (or the file FLEETD_CONFIG names), then FLEETD_*
 * environment variables, then command-line flags. `resolveConfig`
 * validates the result (naming the setting and the reason) and freezes it.
 */
export interface FleetdConfig {
  /** Interface to listen on. Env FLEETD_HOST. Defaults to 0.0.0.0. */
  host: string;
  /** TCP port. Env FLEETD_PORT. Defaults to 7070. */
  port: number;
  /** Folder of the embedded SQLite database. Env FLEETD_DATA_DIR. Defaults to ./.fleetd. */
  dataDir: string;
  /** SQLite `synchronous`: NORMAL survives a fleetd crash, FULL also power loss. Env FLEETD_SQLITE_SYNC. Defaults to NORMAL. */
  sqliteSynchronous: 'NORMAL' | 'FULL';
  /**
   * Where SQLite's WAL is checkpointed: `commit`, inside the commit that fills the WAL, as SQLite does
   * by default; `thread`, on a thread of its own once the store has committed 256 times, which takes
   * about a third of the event loop's time in commits off it at more CPU in all (worth it with cores
   * to spare, not on two). Env FLEETD_SQLITE_CHECKPOINTS. Defaults to commit.
   */
  sqliteCheckpoints: 'thread' | 'commit';
  /** Log level: fatal, error, warn, info, debug, trace or silent. Env FLEETD_LOG_LEVEL. Defaults to info. */
  logLevel: string;

  /** Attempts a task gets unless it says otherwise. Env FLEETD_TASK_MAX_ATTEMPTS. Defaults to 5. */
  taskMaxAttempts: number;
  /** Lease length in ms unless the task says otherwise. Env FLEETD_TASK_LEASE_MS. Defaults to 30000 (30 s). */
  taskLeaseMs: number;
  /** Base retry backoff in ms, doubled on each attempt. Env FLEETD_TASK_BACKOFF_MS. Defaults to 1000 (1 s). */
  taskBackoffMs: number;
  /** Longest retry backoff in ms. Env FLEETD_TASK_BACKOFF_MAX_MS. Defaults to 3600000 (1 h). */
  taskBackoffMaxMs: number;
  /** Largest task payload or result, in bytes of JSON. Env FLEETD_MAX_PAYLOAD_BYTES. Defaults to 1048576 (1 MiB). */
  maxPayloadBytes: number;
  /** Deepest nesting of objects and arrays in a payload or result. Env FLEETD_MAX_PAYLOAD_DEPTH. Defaults to 64. */
  maxPayloadDepth: number;
  /** Most tasks in one batch submit. Env FLEETD_MAX_TASK_BATCH. Defaults to 10000. */
  maxTaskBatch: number;
  /** Most agents in one batch registration. Env FLEETD_MAX_AGENT_BATCH. Defaults to 1000. */
  maxAgentBatch: number;
  /** Longest long-poll wait of a claim, in ms. Env FLEETD_MAX_CLAIM_WAIT_MS. Defaults to 30000. */
  maxClaimWaitMs: number;
  /** Finished tasks are deleted this many ms after they finish; 0 keeps them forever. Env FLEETD_RETENTION_MS. Defaults to 604800000 (7 days). */
  retentionMs: number;
  /** Most finished tasks kept: the least recently finished beyond it are deleted. 0 keeps any number. Env FLEETD_RETENTION_MAX_TASKS. Defaults to 0. */
  retentionMaxTasks: number;
  /** Finished pipeline runs (and their steps) are deleted this many ms after they finish; 0 keeps them forever. Env FLEETD_RUN_RETENTION_MS. Defaults to 0. */
  runRetentionMs: number;
  /** Most finished pipeline runs kept: the least recently finished beyond it are deleted. 0 keeps any number. Env FLEETD_RUN_RETENTION_MAX_RUNS. Defaults to 0. */
  runRetentionMaxRuns: number;

  /** An agent with no heartbeat for this many ms is stale. Env FLEETD_AGENT_STALE_MS. Defaults to 30000. */
  agentStaleMs: number;
  /**
   * An agent with no heartbeat for this many ms goes offline: its leases return to the queue and its
   * locks are released. Must be greater than agentStaleMs. Env FLEETD_AGENT_OFFLINE_MS. Defaults to 90000.
   */
  agentOfflineMs: number;
  /** Longest lock TTL in ms. Env FLEETD_MAX_LOCK_TTL_MS. Defaults to 86400000 (1 day). */
  maxLockTtlMs: number;
  /**
   * A schedule's fire due less than this many ms ago is submitted late; an older one counts as missed
   * and follows the schedule's catchUp. Env FLEETD_SCHEDULE_GRACE_MS. Defaults to 5000.
   */
  scheduleGraceMs: number;
  /** Most missed fires one schedule with catchUp "all" submits after downtime (the latest ones). Env FLEETD_SCHEDULE_MAX_CATCH_UP. Defaults to 100. */
  scheduleMaxCatchUp: number;

  /**
   * How long an agent whose WebSocket dropped keeps its leases and locks, in ms: a reconnect inside
   * it resumes them; after it they are released. Env FLEETD_AGENT_DISCONNECT_GRACE_MS. Defaults to 15000.
   */
  agentDisconnectGraceMs: number;
  /** Most open WebSockets (agents and observers together); one more is closed with 1013. Env FLEETD_WS_MAX_CONNECTIONS. Defaults to 20000. */
  wsMaxConnections: number;
  /** Bytes a socket may have waiting to be sent; a consumer slower than that is cut off (1008). Env FLEETD_WS_MAX_BUFFERED_BYTES. Defaults to 1048576 (1 MiB). */
  wsMaxBufferedBytes: number;
  /**
   * Interval of WebSocket pings in ms, each socket's own (the sockets are pinged a slice at a time
   * over it); a peer that misses one pong is dropped. (Connected agents are heartbeated by the
   * server every agentStaleMs / 3, so they never go stale.) Env FLEETD_WS_PING_MS. Defaults to 10000.
   */
  wsPingMs: number;
  /** Longest wait in ms before observer events are sent as one batch. Env FLEETD_EVENT_BATCH_MS. Defaults to 50. */
  eventBatchMs: number;
  /** Most events in one observer batch; a full batch leaves at once. Env FLEETD_EVENT_BATCH_MAX. Defaults to 50. */
  eventBatchMax: number;
  /** A JSON or YAML file of providers and pipelines to load at start; empty for none. Env FLEETD_PIPELINES_FILE. Defaults to none. */
  pipelinesFile: string;
  /** Pipeline steps running at once across all runs: the background lane's budget. Env FLEETD_PIPELINE_CONCURRENCY. Defaults to 64. */
  pipelineConcurrency: number;
  /**
   * How long a node's hold on a pipeline run it drives lasts unless renewed, in ms (renewed every
   * third of it). With several nodes, another node resumes a dead node's runs after about this long.
   * Env FLEETD_PIPELINE_RUN_LEASE_MS. Defaults to 30000.
   */
  pipelineRunLeaseMs: number;
  /**
   * A run joins a case when the cosine similarity of its embedding to the case's centroid is at
   * least this, in percent. Env FLEETD_CASE_SIMILARITY_PERCENT. Defaults to 80.
   */
  caseSimilarityPercent: number;
  /**
   * Redis for the event bus across nodes, the L2 cache, cache invalidation across nodes and shared rate limits, e.g.
   * redis://:secret@127.0.0.1:6379/0. Empty means none: everything stays in-process. Env FLEETD_REDIS_URL. Defaults to "".
   */
  redisUrl: string;
  /** Most entries in the in-process (L1) response cache; 0 turns the cache off. Env FLEETD_CACHE_MAX_ENTRIES. Defaults to 10000. */
  cacheMaxEntries: number;
  /** Most bytes of response bodies the L1 cache holds. Env FLEETD_CACHE_MAX_BYTES. Defaults to 67108864 (64 MiB). */
  cacheMaxBytes: number;
  /** How long a cached response is fresh, in ms. Env FLEETD_CACHE_TTL_MS. Defaults to 30000 (30 s). */
  cacheTtlMs: number;
  /**
   * After its TTL, how long a cached response may still be served (once) while it is recomputed in
   * the background, in ms; 0 turns stale-while-revalidate off. Writes never leave a stale entry:
   * they delete it. Env FLEETD_CACHE_STALE_MS. Defaults to 30000.
   */
  cacheStaleMs: number;
  /** Requests per second one client (API key or agent, else IP) may make to read routes; 0 is unlimited. Env FLEETD_RATE_LIMIT_READ. Defaults to 20000. */
  rateLimitRead: number;
  /** Requests per second one client (API key or agent, else IP) may make to write routes; 0 is unlimited. Env FLEETD_RATE_LIMIT_WRITE. Defaults to 20000. */
  rateLimitWrite: number;
  /** Heartbeats per second one agent may send; 0 is unlimited. Env FLEETD_RATE_LIMIT_HEARTBEAT. Defaults to 10. */
  rateLimitHeartbeat: number;
  /** Claims per second one agent may make; 0 is unlimited. Env FLEETD_RATE_LIMIT_CLAIM. Defaults to 500. */
  rateLimitClaim: number;
  /** Requests slower than this many ms are logged (warn) with their route and timings. Env FLEETD_SLOW_REQUEST_MS. Defaults to 1000. */
  slowRequestMs: number;
  /** Prometheus metrics at GET /metrics: on or off. Env FLEETD_METRICS. Defaults to on. */
  metrics: 'on' | 'off';
  /**
   * On SIGTERM/SIGINT, the longest wait in ms for in-flight requests and writes to finish before the
   * process exits anyway. Env FLEETD_SHUTDOWN_TIMEOUT_MS. Defaults to 10000.
   */
  shutdownTimeoutMs: number;

  /**
   * PostgreSQL to use as the store instead of embedded SQLite (postgres://user@host:port/db), so that
   * several nodes can share it. Env FLEETD_DATABASE_URL. Defaults to '' (SQLite in dataDir).
   */
  databaseUrl: string;
  /** Schema of fleetd's tables in that database. Env FLEETD_DATABASE_SCHEMA. Defaults to public. */
  databaseSchema: string;
  /** Most PostgreSQL connections a node opens. Env FLEETD_DATABASE_POOL_SIZE. Defaults to 10. */
  databasePoolSize: number;
  /**
   * How long a request waits for a free PostgreSQL connection before failing with 503
   * FLEETD_ERR_STORE_UNAVAILABLE, in ms. Env FLEETD_DATABASE_POOL_TIMEOUT_MS. Defaults to 5000.
   */
  databasePoolTimeoutMs: number;
  /**
   * How often a node on PostgreSQL wakes one of its waiting claims for each requirement set with
   * queued tasks, in ms; 0 never.
   * A claim skips rows another node's claim has locked, and waits when that left it nothing: if the
   * other node then leased fewer of them than it locked, no notification says so. Env
   * FLEETD_CLAIM_RECHECK_MS. Defaults to 1000.
   */
  claimRecheckMs: number;
  /** Prefix of every Redis key and channel fleetd uses, so that clusters can share a Redis. Env FLEETD_REDIS_PREFIX. Defaults to fleetd:. */
  redisPrefix: string;

  /**
   * on: every /v1 request needs an API key or an agent token (Authorization: Bearer). off: anyone
   * who can reach the port may do anything — for local experiments only (`--no-auth`). Env FLEETD_AUTH. Defaults to on.
   */
  auth: 'on' | 'off';
  /**
   * The admin key a first start stores (hashed) when no key exists yet, instead of making one up and
   * printing it: "fk_" and at least 32 more characters. Ignored once any key exists. Env FLEETD_ADMIN_KEY. Defaults to none.
   */
  adminKey: string;
  /** Most WebSockets one API key or agent token may hold open at once; one more gets 429. Env FLEETD_MAX_CONNECTIONS_PER_KEY. Defaults to 100. */
  maxConnectionsPerKey: number;
  /**
   * Heartbeats of online agents are kept in memory and written for all agents together every this
   * many ms (at most a quarter of agentStaleMs); a change of status is written at once.
   * Env FLEETD_AGENT_SEEN_FLUSH_MS. Defaults to 5000.
   */
  agentSeenFlushMs: number;
  /** Most MiB of database pages SQLite keeps in memory; a ceiling, filled as the database grows. Env FLEETD_SQLITE_CACHE_MB. Defaults to 16. */
  sqliteCacheMb: number;
  /** Log lines kept per task: the newest; older ones are dropped as new ones arrive. Env FLEETD_TASK_LOG_MAX_LINES. Defaults to 1000. */
  taskLogMaxLines: number;
  /** Bytes of streamed output kept per task (UTF-8, the newest whole chunks). Env FLEETD_TASK_OUTPUT_MAX_BYTES. Defaults to 262144 (256 KiB). */
  taskOutputMaxBytes: number;
  /** Longest log line (its message, UTF-8 bytes); a longer one is refused with 413. Env FLEETD_TASK_LOG_LINE_MAX_BYTES. Defaults to 8192. */
  taskLogLineMaxBytes: number;
  /** Largest chunk of output in one report (UTF-8 bytes); a larger one is refused with 413. At most taskOutputMaxBytes. Env FLEETD_TASK_OUTPUT_CHUNK_MAX_BYTES. Defaults to 65536. */
  taskOutputChunkMaxBytes: number;
  /**
   * Events each node keeps for observers that resume a subscription (subscribe with since); one
   * that was away for more is told of the gap. 0 keeps none. Env FLEETD_EVENT_REPLAY_WINDOW. Defaults to 10000.
   */
  eventReplayWindow: number;
  /** Most memory those retained events may hold, about, in bytes (streamed output makes large events). Env FLEETD_EVENT_REPLAY_WINDOW_BYTES. Defaults to 33554432 (32 MiB). */
  eventReplayWindowBytes: number;
  /**
   * The longest one attempt of a task may run from its claim, extensions included, unless the task
   * says otherwise; 0: no limit. Env FLEETD_TASK_EXECUTION_TIMEOUT_MS. Defaults to 0.
   */
  taskExecutionTimeoutMs: number;
  /** Largest result a task.completed event carries, in bytes of JSON; beyond it, resultTruncated. Env FLEETD_EVENT_RESULT_MAX_BYTES. Defaults to 65536. */
  eventResultMaxBytes: number;
  /** Longest wait of `GET /v1/tasks/:id?waitMs=`, in ms. Env FLEETD_MAX_TASK_WAIT_MS. Defaults to 30000. */
  maxTaskWaitMs: number;
  /**
   * Failed authentications one address may make in a minute; the next request of it that needs a
   * credential gets 429 until the minute is over. 0 turns the limit off. Env FLEETD_AUTH_FAILURES_PER_MINUTE. Defaults to 20.
   */
  authFailuresPerMinute: number;
  /**
   * After POST /v1/keys/:id/rotate, how long the key's previous secret keeps working, in ms, unless the
   * request says otherwise (graceMs). Env FLEETD_KEY_ROTATION_GRACE_MS. Defaults to 86400000 (24 h).
   */
  keyRotationGraceMs: number;
  /** Audit log entries are deleted this many ms after they were recorded; 0 keeps them forever. Env FLEETD_AUDIT_RETENTION_MS. Defaults to 7776000000 (90 days). */
  auditRetentionMs: number;
  /**
   * A PEM certificate (chain) file: with tlsKey, fleetd serves HTTPS and WSS itself instead of
   * plain HTTP. Env FLEETD_TLS_CERT. Defaults to none.
   */
  tlsCert: string;
  /** The PEM private key file of tlsCert. Env FLEETD_TLS_KEY. Defaults to none. */
  tlsKey: string;
  /**
   * Names of fields whose values never reach the log, comma-separated: wherever they appear in a
   * logged object (a payload, an error's details, an audit entry, down to four levels) and in the
   * query of a logged URL (the slow-request log). Empty: none. Env FLEETD_REDACT_FIELDS.
   * Defaults to password,apiKey,api_key,token,secret,authorization.
   */
  redactFields: string;
}

export const defaultConfig: Readonly<FleetdConfig> = Object.freeze({
  host: '0.0.0.0',
  port: 7070,
  dataDir: './.fleetd',
  sqliteSynchronous: 'NORMAL',
  sqliteCheckpoints: 'commit',
  logLevel: 'info',
  taskMaxAttempts: 5,
  taskLeaseMs: 30_000,
  taskBackoffMs: 1_000,
  taskBackoffMaxMs: 3_600_000,
  maxPayloadBytes: 1_048_576,
  maxPayloadDepth: 64,
  maxTaskBatch: 10_000,
  maxAgentBatch: 1_000,
  maxClaimWaitMs: 30_000,
  retentionMs: 604_800_000,
  retentionMaxTasks: 0,
  runRetentionMs: 0,
  runRetentionMaxRuns: 0,
  agentStaleMs: 30_000,
  agentOfflineMs: 90_000,
  maxLockTtlMs: 86_400_000,
  scheduleGraceMs: 5_000,
  scheduleMaxCatchUp: 100,
  agentDisconnectGraceMs: 15_000,
  wsMaxConnections: 20_000,
  wsMaxBufferedBytes: 1_048_576,
  wsPingMs: 10_000,
  eventBatchMs: 50,
  eventBatchMax: 50,
  pipelinesFile: '',
  pipelineConcurrency: 64,
  pipelineRunLeaseMs: 30_000,
  caseSimilarityPercent: 80,
  redisUrl: '',
  cacheMaxEntries: 10_000,
  cacheMaxBytes: 67_108_864,
  cacheTtlMs: 30_000,
  cacheStaleMs: 30_000,
  rateLimitRead: 20_000,
  rateLimitWrite: 20_000,
  rateLimitHeartbeat: 10,
  rateLimitClaim: 500,
  slowRequestMs: 1_000,
  metrics: 'on',
  shutdownTimeoutMs: 10_000,
  databaseUrl: '',
  databaseSchema: 'public',
  databasePoolSize: 10,
  databasePoolTimeoutMs: 5_000,
  claimRecheckMs: 1_000,
  redisPrefix: 'fleetd:',
  auth: 'on',
  adminKey: '',
  maxConnectionsPerKey: 100,
  agentSeenFlushMs: 5_000,
  sqliteCacheMb: 16,
  taskLogMaxLines: 1_000,
  taskOutputMaxBytes: 262_144,
  taskLogLineMaxBytes: 8_192,
  taskOutputChunkMaxBytes: 65_536,
  eventReplayWindow: 10_000,
  eventReplayWindowBytes: 33_554_432,
  taskExecutionTimeoutMs: 0,
  eventResultMaxBytes: 65_536,
  maxTaskWaitMs: 30_000,
  authFailuresPerMinute: 20,
  keyRotationGraceMs: 86_400_000,
  auditRetentionMs: 7_776_000_000,
  tlsCert: '',
  tlsKey: '',
  redactFields: 'password,apiKey,api_key,token,secret,authorization',
});

type Kind = 'string' | 'int' | 'enum';
/** `optional`: may be empty. `secret`: masked wherever the configuration is shown. `pattern`: what a string must look like. */
const settings: Record<
  keyof FleetdConfig,
  { env: string; kind: Kind; min?: number; values?: readonly string[]; optional?: boolean; secret?: boolean; pattern?: { re: RegExp; what: string } }
> = {
  host: { env: 'FLEETD_HOST', kind: 'string' },
  port: { env: 'FLEETD_PORT', kind: 'int', min: 0 },
  dataDir: { env: 'FLEETD_DATA_DIR', kind: 'string' },
  sqliteSynchronous: { env: 'FLEETD_SQLITE_SYNC', kind: 'enum', values: ['NORMAL', 'FULL'] },
  sqliteCheckpoints: { env: 'FLEETD_SQLITE_CHECKPOINTS', kind: 'enum', values: ['thread', 'commit'] },
  logLevel: {
    env: 'FLEETD_LOG_LEVEL',
    kind: 'enum',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
  },
  taskMaxAttempts: { env: 'FLEETD_TASK_MAX_ATTEMPTS', kind: 'int', min: 1 },
  taskLeaseMs: { env: 'FLEETD_TASK_LEASE_MS', kind: 'int', min: 100 },
  taskBackoffMs: { env: 'FLEETD_TASK_BACKOFF_MS', kind: 'int', min: 0 },
  taskBackoffMaxMs: { env: 'FLEETD_TASK_BACKOFF_MAX_MS', kind: 'int', min: 0 },
  maxPayloadBytes: { env: 'FLEETD_MAX_PAYLOAD_BYTES', kind: 'int', min: 1 },
  maxPayloadDepth: { env: 'FLEETD_MAX_PAYLOAD_DEPTH', kind: 'int', min: 1 },
  maxTaskBatch: { env: 'FLEETD_MAX_TASK_BATCH', kind: 'int', min: 1 },
  maxAgentBatch: { env: 'FLEETD_MAX_AGENT_BATCH', kind: 'int', min: 1 },
  maxClaimWaitMs: { env: 'FLEETD_MAX_CLAIM_WAIT_MS', kind: 'int', min: 0 },
  retentionMs: { env: 'FLEETD_RETENTION_MS', kind: 'int', min: 0 },
  retentionMaxTasks: { env: 'FLEETD_RETENTION_MAX_TASKS', kind: 'int', min: 0 },
  runRetentionMs: { env: 'FLEETD_RUN_RETENTION_MS', kind: 'int', min: 0 },
  runRetentionMaxRuns: { env: 'FLEETD_RUN_RETENTION_MAX_RUNS', kind: 'int', min: 0 },
  agentStaleMs: { env: 'FLEETD_AGENT_STALE_MS', kind: 'int', min: 1 },
  agentOfflineMs: { env: 'FLEETD_AGENT_OFFLINE_MS', kind: 'int', min: 1 },
  maxLockTtlMs: { env: 'FLEETD_MAX_LOCK_TTL_MS', kind: 'int', min: 1 },
  scheduleGraceMs: { env: 'FLEETD_SCHEDULE_GRACE_MS', kind: 'int', min: 0 },
  scheduleMaxCatchUp: { env: 'FLEETD_SCHEDULE_MAX_CATCH_UP', kind: 'int', min: 1 },
  agentDisconnectGraceMs: { env: 'FLEETD_AGENT_DISCONNECT_GRACE_MS', kind: 'int', min: 0 },
  wsMaxConnections: { env: 'FLEETD_WS_MAX_CONNECTIONS', kind: 'int', min: 1 },
  wsMaxBufferedBytes: { env: 'FLEETD_WS_MAX_BUFFERED_BYTES', kind: 'int', min: 1024 },
  wsPingMs: { env: 'FLEETD_WS_PING_MS', kind: 'int', min: 100 },
  eventBatchMs: { env: 'FLEETD_EVENT_BATCH_MS', kind: 'int', min: 0 },
  eventBatchMax: { env: 'FLEETD_EVENT_BATCH_MAX', kind: 'int', min: 1 },
  pipelinesFile: { env: 'FLEETD_PIPELINES_FILE', kind: 'string', optional: true },
  pipelineConcurrency: { env: 'FLEETD_PIPELINE_CONCURRENCY', kind: 'int', min: 1 },
  pipelineRunLeaseMs: { env: 'FLEETD_PIPELINE_RUN_LEASE_MS', kind: 'int', min: 300 },
  caseSimilarityPercent: { env: 'FLEETD_CASE_SIMILARITY_PERCENT', kind: 'int', min: 0 },
  redisUrl: { env: 'FLEETD_REDIS_URL', kind: 'string', optional: true, secret: true },
  cacheMaxEntries: { env: 'FLEETD_CACHE_MAX_ENTRIES', kind: 'int', min: 0 },
  cacheMaxBytes: { env: 'FLEETD_CACHE_MAX_BYTES', kind: 'int', min: 1024 },
  cacheTtlMs: { env: 'FLEETD_CACHE_TTL_MS', kind: 'int', min: 1 },
  cacheStaleMs: { env: 'FLEETD_CACHE_STALE_MS', kind: 'int', min: 0 },
  rateLimitRead: { env: 'FLEETD_RATE_LIMIT_READ', kind: 'int', min: 0 },
  rateLimitWrite: { env: 'FLEETD_RATE_LIMIT_WRITE', kind: 'int', min: 0 },
  rateLimitHeartbeat: { env: 'FLEETD_RATE_LIMIT_HEARTBEAT', kind: 'int', min: 0 },
  rateLimitClaim: { env: 'FLEETD_RATE_LIMIT_CLAIM', kind: 'int', min: 0 },
  slowRequestMs: { env: 'FLEETD_SLOW_REQUEST_MS', kind: 'int', min: 0 },
  metrics: { env: 'FLEETD_METRICS', kind: 'enum', values: ['on', 'off'] },
  shutdownTimeoutMs: { env: 'FLEETD_SHUTDOWN_TIMEOUT_MS', kind: 'int', min: 100 },
  databaseUrl: {
    env: 'FLEETD_DATABASE_URL',
    kind: 'string',
    optional: true,
    secret: true,
    pattern: { re: /^postgres(ql)?:\/\//, what: 'a postgres:// URL' },
  },
  databaseSchema: {
    env: 'FLEETD_DATABASE_SCHEMA',
    kind: 'string',
    pattern: { re: /^[a-z_][a-z0-9_]{0,62}$/, what: 'a lower-case SQL identifier' },
  },
  databasePoolSize: { env: 'FLEETD_DATABASE_POOL_SIZE', kind: 'int', min: 1 },
  databasePoolTimeoutMs: { env: 'FLEETD_DATABASE_POOL_TIMEOUT_MS', kind: 'int', min: 1 },
  claimRecheckMs: { env: 'FLEETD_CLAIM_RECHECK_MS', kind: 'int', min: 0 },
  redisPrefix: { env: 'FLEETD_REDIS_PREFIX', kind: 'string' },
  auth: { env: 'FLEETD_AUTH', kind: 'enum', values: ['on', 'off'] },
  adminKey: {
    env: 'FLEETD_ADMIN_KEY',
    kind: 'string',
    optional: true,
    secret: true,
    pattern: { re: /^fk_[A-Za-z0-9_-]{32,}$/, what: 'an API key ("fk_" and at least 32 letters, digits, "-" or "_")' },
  },
  maxConnectionsPerKey: { env: 'FLEETD_MAX_CONNECTIONS_PER_KEY', kind: 'int', min: 1 },
  agentSeenFlushMs: { env: 'FLEETD_AGENT_SEEN_FLUSH_MS', kind: 'int', min: 1 },
  sqliteCacheMb: { env: 'FLEETD_SQLITE_CACHE_MB', kind: 'int', min: 1 },
  taskLogMaxLines: { env: 'FLEETD_TASK_LOG_MAX_LINES', kind: 'int', min: 1 },
  taskOutputMaxBytes: { env: 'FLEETD_TASK_OUTPUT_MAX_BYTES', kind: 'int', min: 1 },
  taskLogLineMaxBytes: { env: 'FLEETD_TASK_LOG_LINE_MAX_BYTES', kind: 'int', min: 1 },
  taskOutputChunkMaxBytes: { env: 'FLEETD_TASK_OUTPUT_CHUNK_MAX_BYTES', kind: 'int', min: 1 },
  eventReplayWindow: { env: 'FLEETD_EVENT_REPLAY_WINDOW', kind: 'int', min: 0 },
  eventReplayWindowBytes: { env: 'FLEETD_EVENT_REPLAY_WINDOW_BYTES', kind: 'int', min: 1_024 },
  taskExecutionTimeoutMs: { env: 'FLEETD_TASK_EXECUTION_TIMEOUT_MS', kind: 'int', min: 0 },
  eventResultMaxBytes: { env: 'FLEETD_EVENT_RESULT_MAX_BYTES', kind: 'int', min: 0 },
  maxTaskWaitMs: { env: 'FLEETD_MAX_TASK_WAIT_MS', kind: 'int', min: 0 },
  authFailuresPerMinute: { env: 'FLEETD_AUTH_FAILURES_PER_MINUTE', kind: 'int', min: 0 },
  keyRotationGraceMs: { env: 'FLEETD_KEY_ROTATION_GRACE_MS', kind: 'int', min: 0 },
  auditRetentionMs: { env: 'FLEETD_AUDIT_RETENTION_MS', kind: 'int', min: 0 },
  tlsCert: { env: 'FLEETD_TLS_CERT', kind: 'string', optional: true },
  tlsKey: { env: 'FLEETD_TLS_KEY', kind: 'string', optional: true },
  redactFields: {
    env: 'FLEETD_REDACT_FIELDS',
    kind: 'string',
    optional: true,
    pattern: { re: /^[A-Za-z_$][\w$-]*(,[A-Za-z_$][\w$-]*)*$/, what: 'field names separated by commas, e.g. password,apiKey' },
  },
};

export class ConfigError extends Error {
  constructor(readonly setting: string, reason: string) {
    super(`invalid setting ${setting}: ${reason}`);
    this.name = 'ConfigError';
  }
}

function parseValue(key: keyof FleetdConfig, raw: unknown, source: string): unknown {
  const spec = settings[key];
  if (spec.kind === 'int') {
    const n = typeof raw === 'number' ? raw : Number(String(raw).trim());
    if (String(raw).trim() === '' || !Number.isSafeInteger(n)) throw new ConfigError(source, `"${raw}" is not a whole number`);
    if (spec.min !== undefined && n < spec.min) throw new ConfigError(source, `${n} is below the minimum of ${spec.min}`);
    return n;
  }
  const s = String(raw);
  if (spec.kind === 'enum' && !spec.values!.includes(s)) {
    throw new ConfigError(source, `"${s}" is not one of ${spec.values!.join(', ')}`);
  }
  if (s === '' && !spec.optional) throw new ConfigError(source, 'must not be empty');
  if (key === 'redisUrl' && s !== '' && !/^rediss?:\/\//.test(s)) {
    throw new ConfigError(source, 'must be a redis:// or rediss:// URL');
  }
  if (s !== '' && spec.pattern && !spec.pattern.re.test(s)) {
    // A secret is never echoed, even a malformed one: errors end up in logs.
    throw new ConfigError(source, `${spec.secret ? 'the value' : `"${s}"`} is not ${spec.pattern.what}`);
  }
  return s;
}

/** Where the optional configuration file is looked for unless FLEETD_CONFIG names another. */
export const CONFIG_FILE = 'fleetd.config.json';

/**
 * Reads the configuration file: a JSON object of settings by name, e.g. {"port": 8080}. A missing
 * file is fine unless FLEETD_CONFIG named it; anything else wrong with it is an error naming the setting.
 */
function readConfigFile(env: NodeJS.ProcessEnv): { path: string; values: Record<string, unknown> } | undefined {
  const named = env.FLEETD_CONFIG;
  const path = resolvePath(named ?? CONFIG_FILE);
  if (!existsSync(path)) {
    if (named !== undefined) throw new ConfigError('FLEETD_CONFIG', `${path} does not exist`);
    return undefined;
  }
  let values: unknown;
  try {
    values = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(path, `is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof values !== 'object' || values === null || Array.isArray(values)) {
    throw new ConfigError(path, 'must hold a JSON object of settings, e.g. {"port": 8080}');
  }
  return { path, values: values as Record<string, unknown> };
}

/** Defaults < fleetd.config.json < environment < overrides (flags or code), validated and frozen. */
export function resolveConfig(
  overrides: Partial<FleetdConfig> = {},
  env: NodeJS.ProcessEnv = process.env,
): Readonly<FleetdConfig> {
  const config: Record<string, unknown> = { ...defaultConfig };
  const file = readConfigFile(env);
  for (const [key, value] of Object.entries(file?.values ?? {})) {
    if (!(key in settings)) throw new ConfigError(`${file!.path}: ${key}`, 'is not a fleetd setting');
    config[key] = parseValue(key as keyof FleetdConfig, value, `${file!.path}: ${key}`);
  }
  for (const key of Object.keys(settings) as (keyof FleetdConfig)[]) {
    const fromEnv = env[settings[key].env];
    if (fromEnv !== undefined) config[key] = parseValue(key, fromEnv, settings[key].env);
  }
  for (const [key, value] of Object.entries(overrides)) {
    if (!(key in settings)) throw new ConfigError(key, 'is not a fleetd setting');
    if (value !== undefined) config[key] = parseValue(key as keyof FleetdConfig, value, key);
  }
  const resolved = config as unknown as FleetdConfig;
  validate(resolved);
  return Object.freeze(resolved);
}

function validate(c: FleetdConfig): void {
  if (c.port > 65_535) throw new ConfigError('port', `${c.port} is above 65535`);
  if (c.agentOfflineMs <= c.agentStaleMs) {
    throw new ConfigError('agentOfflineMs', `(${c.agentOfflineMs}) must be greater than agentStaleMs (${c.agentStaleMs})`);
  }
  if (c.caseSimilarityPercent > 100) throw new ConfigError('caseSimilarityPercent', `${c.caseSimilarityPercent} is above 100`);
  if (c.taskOutputChunkMaxBytes > c.taskOutputMaxBytes) {
    throw new ConfigError('taskOutputChunkMaxBytes', `(${c.taskOutputChunkMaxBytes}) cannot be more than taskOutputMaxBytes (${c.taskOutputMaxBytes})`);
  }
  if ((c.tlsCert === '') !== (c.tlsKey === '')) {
    throw new ConfigError(c.tlsCert === '' ? 'tlsCert' : 'tlsKey', 'HTTPS needs both a certificate and its key: give --tls-cert FILE and --tls-key FILE (FLEETD_TLS_CERT, FLEETD_TLS_KEY)');
  }
  if (c.taskBackoffMaxMs < c.taskBackoffMs) {
    throw new ConfigError('taskBackoffMaxMs', `(${c.taskBackoffMaxMs}) cannot be less than taskBackoffMs (${c.taskBackoffMs})`);
  }
}

/** The field names of redactFields. */
export const redactedFields = (config: Pick<FleetdConfig, 'redactFields'>): string[] => (config.redactFields === '' ? [] : config.redactFields.split(','));

/** The configuration as it may be shown (GET /v1/config, logs): secrets masked. */
export function maskedConfig(config: Readonly<FleetdConfig>): Record<string, unknown> {
  const shown: Record<string, unknown> = { ...config };
  for (const key of Object.keys(settings) as (keyof FleetdConfig)[]) {
    const value = config[key];
    if (!settings[key].secret || value === '') continue;
    // A URL keeps its host so that an operator can tell where it points; only the password goes.
    try {
      const url = new URL(String(value));
      if (url.password) url.password = '***';
      shown[key] = url.toString();
    } catch {
      shown[key] = '***';
    }
  }
  return shown;
}

/** For `fleetd start --help`: every setting, its variable and its default. */
export function describeSettings(): { key: string; env: string; default: unknown }[] {
  return (Object.keys(settings) as (keyof FleetdConfig)[]).map((key) => ({
    key,
    env: settings[key].env,
    default: defaultConfig[key],
  }));
}
