import type Database from 'better-sqlite3';

/**
 * Versioned schema for the SQLite driver. A migration is never edited once released: a change is
 * a new entry. Each runs in its own transaction and is recorded in schema_migrations.
 */
export const migrations: { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'tasks, agents, locks and their counters',
    sql: `
CREATE TABLE tasks (
  id               INTEGER PRIMARY KEY,
  type             TEXT    NOT NULL,
  req_key          TEXT    NOT NULL,
  payload          TEXT    NOT NULL,
  priority         INTEGER NOT NULL,
  status           TEXT    NOT NULL,
  idempotency_key  TEXT    UNIQUE,
  request_hash     TEXT,
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  lease_ms         INTEGER NOT NULL,
  backoff_ms       INTEGER NOT NULL,
  run_at           INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  claimed_at       INTEGER,
  completed_at     INTEGER,
  agent_id         TEXT,
  lease_expires_at INTEGER,
  result           TEXT,
  error            TEXT
);
-- The claim: one index seek per requirement set, already in priority-then-age order.
CREATE INDEX tasks_claim     ON tasks (req_key, priority DESC, id) WHERE status = 'queued';
CREATE INDEX tasks_scheduled ON tasks (run_at)           WHERE status = 'scheduled';
CREATE INDEX tasks_leases    ON tasks (lease_expires_at) WHERE status = 'leased';
CREATE INDEX tasks_in_flight ON tasks (agent_id)         WHERE status = 'leased';
CREATE INDEX tasks_finished  ON tasks (completed_at)     WHERE completed_at IS NOT NULL;
CREATE INDEX tasks_by_status ON tasks (status, id);
CREATE INDEX tasks_by_type   ON tasks (type, id);
CREATE INDEX tasks_by_agent  ON tasks (agent_id, id)     WHERE agent_id IS NOT NULL;

-- Counters kept by triggers in the same transaction as the write, so /v1/stats never scans
-- tasks and the counts always equal a recount.
CREATE TABLE task_counts (
  type     TEXT    NOT NULL,
  req_key  TEXT    NOT NULL,
  priority INTEGER NOT NULL,
  status   TEXT    NOT NULL,
  n        INTEGER NOT NULL,
  PRIMARY KEY (status, req_key, type, priority)
) WITHOUT ROWID;
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
  INSERT INTO task_counts VALUES (NEW.type, NEW.req_key, NEW.priority, NEW.status, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_count_update AFTER UPDATE OF status ON tasks WHEN OLD.status <> NEW.status BEGIN
  UPDATE task_counts SET n = n - 1
    WHERE status = OLD.status AND req_key = OLD.req_key AND type = OLD.type AND priority = OLD.priority;
  INSERT INTO task_counts VALUES (NEW.type, NEW.req_key, NEW.priority, NEW.status, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
  UPDATE task_counts SET n = n - 1
    WHERE status = OLD.status AND req_key = OLD.req_key AND type = OLD.type AND priority = OLD.priority;
END;

CREATE TABLE agents (
  seq               INTEGER PRIMARY KEY,
  id                TEXT    NOT NULL UNIQUE,
  name              TEXT    NOT NULL,
  capabilities      TEXT    NOT NULL,
  labels            TEXT    NOT NULL,
  max_concurrency   INTEGER NOT NULL,
  token_hash        TEXT    NOT NULL,
  status            TEXT    NOT NULL,
  created_at        INTEGER NOT NULL,
  last_heartbeat_at INTEGER NOT NULL
);
CREATE INDEX agents_by_status ON agents (status, last_heartbeat_at);
CREATE INDEX agents_by_status_seq ON agents (status, seq);
CREATE TABLE agent_capabilities (
  capability TEXT    NOT NULL,
  agent_seq  INTEGER NOT NULL REFERENCES agents (seq) ON DELETE CASCADE,
  PRIMARY KEY (capability, agent_seq)
) WITHOUT ROWID;
CREATE INDEX agent_capabilities_by_agent ON agent_capabilities (agent_seq);

CREATE TABLE agent_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO agent_counts VALUES ('online', 0), ('stale', 0), ('offline', 0);
CREATE TRIGGER agents_count_insert AFTER INSERT ON agents BEGIN
  UPDATE agent_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER agents_count_update AFTER UPDATE OF status ON agents WHEN OLD.status <> NEW.status BEGIN
  UPDATE agent_counts SET n = n - 1 WHERE status = OLD.status;
  UPDATE agent_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER agents_count_delete AFTER DELETE ON agents BEGIN
  UPDATE agent_counts SET n = n - 1 WHERE status = OLD.status;
END;

CREATE TABLE locks (
  seq         INTEGER PRIMARY KEY,
  id          TEXT    NOT NULL UNIQUE,
  agent_id    TEXT    NOT NULL,
  resources   TEXT    NOT NULL,
  description TEXT    NOT NULL,
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL
);
CREATE INDEX locks_by_expiry ON locks (expires_at);
CREATE INDEX locks_by_agent  ON locks (agent_id, seq);
CREATE TABLE lock_resources (
  resource TEXT    PRIMARY KEY,
  lock_seq INTEGER NOT NULL REFERENCES locks (seq) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX lock_resources_by_lock ON lock_resources (lock_seq);
`,
  },
  {
    version: 2,
    name: 'pipeline runs and their steps',
    sql: `
CREATE TABLE pipeline_runs (
  id              INTEGER PRIMARY KEY,
  pipeline        TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  input           TEXT    NOT NULL,
  output          TEXT,
  error           TEXT,
  idempotency_key TEXT    UNIQUE,
  request_hash    TEXT,
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  finished_at     INTEGER
);
-- Resuming on start reads the unfinished runs only; listing filters by pipeline or status, newest first.
CREATE INDEX pipeline_runs_unfinished  ON pipeline_runs (id) WHERE status IN ('queued', 'running');
CREATE INDEX pipeline_runs_by_pipeline ON pipeline_runs (pipeline, id);
CREATE INDEX pipeline_runs_by_status   ON pipeline_runs (status, id);

-- One row per step of a run, written when the step starts, retries, finishes or fails.
CREATE TABLE pipeline_steps (
  run_id          INTEGER NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
  position        INTEGER NOT NULL,
  name            TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  output          TEXT,
  error           TEXT,
  started_at      INTEGER,
  finished_at     INTEGER,
  next_attempt_at INTEGER,
  PRIMARY KEY (run_id, position)
) WITHOUT ROWID;
CREATE UNIQUE INDEX pipeline_steps_by_name ON pipeline_steps (run_id, name);

CREATE TABLE pipeline_run_counts (
  pipeline TEXT    NOT NULL,
  status   TEXT    NOT NULL,
  n        INTEGER NOT NULL,
  PRIMARY KEY (pipeline, status)
) WITHOUT ROWID;
CREATE TRIGGER pipeline_runs_count_insert AFTER INSERT ON pipeline_runs BEGIN
  INSERT INTO pipeline_run_counts VALUES (NEW.pipeline, NEW.status, 1) ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER pipeline_runs_count_update AFTER UPDATE OF status ON pipeline_runs WHEN OLD.status <> NEW.status BEGIN
  UPDATE pipeline_run_counts SET n = n - 1 WHERE pipeline = OLD.pipeline AND status = OLD.status;
  INSERT INTO pipeline_run_counts VALUES (NEW.pipeline, NEW.status, 1) ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER pipeline_runs_count_delete AFTER DELETE ON pipeline_runs BEGIN
  UPDATE pipeline_run_counts SET n = n - 1 WHERE pipeline = OLD.pipeline AND status = OLD.status;
END;
`,
  },
  {
    version: 3,
    name: 'cases: pipeline runs grouped by similarity',
    sql: `
CREATE TABLE cases (
  id         INTEGER PRIMARY KEY,
  title      TEXT    NOT NULL,
  -- The mean of the members' unit vectors (JSON array), what a new member is compared with.
  centroid   TEXT    NOT NULL,
  size       INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
-- A run belongs to at most one case: assigning it again (a step repeated after a restart) changes nothing.
CREATE TABLE case_members (
  run_id     INTEGER PRIMARY KEY,
  case_id    INTEGER NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
  similarity REAL    NOT NULL,
  text       TEXT    NOT NULL,
  added_at   INTEGER NOT NULL
);
CREATE INDEX case_members_by_case ON case_members (case_id, run_id);
`,
  },
  {
    version: 4,
    name: 'API keys, and agents found by their token',
    sql: `
-- Keys are stored as the SHA-256 of the secret: it is shown once, when created, and never again.
CREATE TABLE api_keys (
  id         TEXT    PRIMARY KEY,
  name       TEXT    NOT NULL,
  scope      TEXT    NOT NULL,
  hash       TEXT    NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE UNIQUE INDEX agents_by_token ON agents (token_hash);
`,
  },
  {
    version: 5,
    name: 'pipeline runs are leased to the node driving them',
    sql: `
ALTER TABLE pipeline_runs ADD COLUMN owner TEXT;
ALTER TABLE pipeline_runs ADD COLUMN lease_expires_at INTEGER;
`,
  },
  {
    version: 6,
    name: 'cases carry a version, bumped on every change, for nodes to catch up on',
    sql: `
ALTER TABLE cases ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
UPDATE cases SET version = id;
CREATE INDEX cases_by_version ON cases (version);
`,
  },
  {
    version: 7,
    name: 'tasks carry execution and schedule timeouts, tags and metadata',
    sql: `
ALTER TABLE tasks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
-- Each tag of each task once, to list a tag's tasks without reading the others.
CREATE TABLE task_tags (
  tag     TEXT    NOT NULL,
  task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  PRIMARY KEY (tag, task_id)
) WITHOUT ROWID;
CREATE INDEX task_tags_by_task ON task_tags (task_id);
ALTER TABLE tasks ADD COLUMN execution_timeout_ms INTEGER;
ALTER TABLE tasks ADD COLUMN schedule_timeout_ms INTEGER;
-- runAt + scheduleTimeoutMs while the task has never been claimed; its first claim clears it.
ALTER TABLE tasks ADD COLUMN expires_at INTEGER;
CREATE INDEX tasks_expiring ON tasks (expires_at) WHERE expires_at IS NOT NULL AND status IN ('queued', 'scheduled');
`,
  },
  {
    version: 8,
    name: 'the progress, log lines and output agents report on their tasks, a bounded tail per task',
    sql: `
-- How much of each kind a task has had reported, ever, and its last sequence number: what the next
-- entry's seq and mark follow from, and what tells a reader how much of the tail was dropped.
CREATE TABLE task_activity_totals (
  task_id      INTEGER PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
  seq          INTEGER NOT NULL,
  progress     INTEGER NOT NULL,
  log_lines    INTEGER NOT NULL,
  output_bytes INTEGER NOT NULL
);
-- mark: how much of its kind came before the entry (lines, bytes, progress reports), so that the
-- oldest beyond the bounds go by one range delete on (task_id, kind, mark).
CREATE TABLE task_activity (
  task_id  INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  seq      INTEGER NOT NULL,
  kind     TEXT    NOT NULL,
  mark     INTEGER NOT NULL,
  at       INTEGER NOT NULL,
  level    TEXT,
  message  TEXT,
  progress REAL,
  text     TEXT,
  PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
CREATE INDEX task_activity_by_kind ON task_activity (task_id, kind, mark);
`,
  },
  {
    version: 9,
    name: 'fair sharing: concurrency keys, type policies and pauses, rate-limit starts, round-robin turns',
    sql: `
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT NOT NULL DEFAULT '';
-- Resources a task locks while it is leased (JSON array); its lock is named task-<id>.
ALTER TABLE tasks ADD COLUMN locks TEXT NOT NULL DEFAULT '[]';
CREATE INDEX tasks_queued_locking ON tasks (id) WHERE status = 'queued' AND locks <> '[]';
-- A task's locks belong to its lease: they go when the lease ends, whichever way it ends.
CREATE TRIGGER tasks_lease_locks_end AFTER UPDATE OF status ON tasks
  WHEN OLD.status = 'leased' AND NEW.status <> 'leased' AND OLD.locks <> '[]' BEGIN
  DELETE FROM locks WHERE id = 'task-' || OLD.id;
END;
CREATE TRIGGER tasks_lease_locks_gone AFTER DELETE ON tasks WHEN OLD.status = 'leased' AND OLD.locks <> '[]' BEGIN
  DELETE FROM locks WHERE id = 'task-' || OLD.id;
END;
-- Queued tasks by (requirement set, type, priority, key): what a claim takes turns over.
CREATE TABLE queued_groups (
  req_key  TEXT    NOT NULL,
  type     TEXT    NOT NULL,
  priority INTEGER NOT NULL,
  ckey     TEXT    NOT NULL,
  n        INTEGER NOT NULL,
  PRIMARY KEY (req_key, type, priority, ckey)
) WITHOUT ROWID;
INSERT INTO queued_groups SELECT req_key, type, priority, concurrency_key, count(*) FROM tasks WHERE status = 'queued'
  GROUP BY req_key, type, priority, concurrency_key;
CREATE TRIGGER tasks_queued_group_insert AFTER INSERT ON tasks WHEN NEW.status = 'queued' BEGIN
  INSERT INTO queued_groups VALUES (NEW.req_key, NEW.type, NEW.priority, NEW.concurrency_key, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_queued_group_enter AFTER UPDATE OF status ON tasks WHEN NEW.status = 'queued' AND OLD.status <> 'queued' BEGIN
  INSERT INTO queued_groups VALUES (NEW.req_key, NEW.type, NEW.priority, NEW.concurrency_key, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_queued_group_leave AFTER UPDATE OF status ON tasks WHEN OLD.status = 'queued' AND NEW.status <> 'queued' BEGIN
  UPDATE queued_groups SET n = n - 1
    WHERE req_key = OLD.req_key AND type = OLD.type AND priority = OLD.priority AND ckey = OLD.concurrency_key;
END;
CREATE TRIGGER tasks_queued_group_delete AFTER DELETE ON tasks WHEN OLD.status = 'queued' BEGIN
  UPDATE queued_groups SET n = n - 1
    WHERE req_key = OLD.req_key AND type = OLD.type AND priority = OLD.priority AND ckey = OLD.concurrency_key;
END;
CREATE INDEX tasks_queued_by_group ON tasks (req_key, type, priority, concurrency_key, id) WHERE status = 'queued';
CREATE INDEX tasks_queued_keyed ON tasks (concurrency_key) WHERE status = 'queued' AND concurrency_key <> '';
CREATE INDEX tasks_leased_by_type ON tasks (type, concurrency_key) WHERE status = 'leased';

CREATE TABLE type_policies (
  type       TEXT    PRIMARY KEY,
  policy     TEXT    NOT NULL,
  updated_at INTEGER NOT NULL
);
-- ckey '' pauses the whole type.
CREATE TABLE type_pauses (
  type       TEXT    NOT NULL,
  ckey       TEXT    NOT NULL,
  until      INTEGER,
  reason     TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (type, ckey)
) WITHOUT ROWID;
CREATE TABLE type_starts (
  type TEXT    NOT NULL,
  ckey TEXT    NOT NULL,
  at   INTEGER NOT NULL
);
CREATE INDEX type_starts_by_type ON type_starts (type, at);
CREATE TABLE fair_keys (
  ckey TEXT PRIMARY KEY,
  pass REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE fair_clock (id INTEGER PRIMARY KEY CHECK (id = 1), clock REAL NOT NULL);
INSERT INTO fair_clock VALUES (1, 0);
-- What agents reported their tasks used (tokens, cost), for the sums per type and key over an hour and a day.
CREATE TABLE task_usage (
  type          TEXT    NOT NULL,
  ckey          TEXT    NOT NULL,
  at            INTEGER NOT NULL,
  input_tokens  INTEGER NOT NULL,
  output_tokens INTEGER NOT NULL,
  cost_usd      REAL    NOT NULL,
  model         TEXT
);
CREATE INDEX task_usage_by_type ON task_usage (type, at);
`,
  },
  {
    version: 10,
    name: 'tasks with a parent and dependencies: the waiting status and its edges; recurring schedules',
    sql: `
ALTER TABLE tasks ADD COLUMN parent_id INTEGER;
ALTER TABLE tasks ADD COLUMN deps_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN deps_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN on_dependency_failure TEXT;
-- Set when a task that depends on this one is inserted: only then does finishing it look for dependents.
ALTER TABLE tasks ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_by_parent ON tasks (parent_id, id) WHERE parent_id IS NOT NULL;
-- One row per dependency; the outcome of depends_on is copied in when it finishes, so that the
-- dependent's agent gets it even after retention deleted the dependency.
CREATE TABLE task_dependencies (
  task_id    INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  depends_on INTEGER NOT NULL,
  status     TEXT,
  result     TEXT,
  error      TEXT,
  PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX task_dependencies_open ON task_dependencies (depends_on) WHERE status IS NULL;

-- Recurring schedules: next_fire_at is the next fire not yet submitted; nodes move it on with a
-- compare-and-set, and each fire's task has an idempotency key of the name and the fire time.
CREATE TABLE schedules (
  seq          INTEGER PRIMARY KEY,
  name         TEXT    NOT NULL UNIQUE,
  cron         TEXT    NOT NULL,
  timezone     TEXT    NOT NULL,
  task         TEXT    NOT NULL,
  overlap      TEXT    NOT NULL,
  catch_up     TEXT    NOT NULL,
  paused       INTEGER NOT NULL DEFAULT 0,
  next_fire_at INTEGER  NOT NULL,
  last_fire_at INTEGER,
  last_task_id INTEGER,
  created_at   INTEGER  NOT NULL,
  updated_at   INTEGER  NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
`,
  },
  {
    version: 11,
    name: 'pipelines defined over the API, in versions; runs keep theirs; approval steps wait for a decision',
    sql: `
-- One row per version of a pipeline defined over the API; a NULL definition is a deletion.
CREATE TABLE pipeline_versions (
  name       TEXT    NOT NULL,
  version    INTEGER NOT NULL,
  definition TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (name, version)
) WITHOUT ROWID;
-- The version a run was started with; NULL for a pipeline of the file (or of code).
ALTER TABLE pipeline_runs ADD COLUMN pipeline_version INTEGER;
-- An approval step waiting for a decision: its prompt, deadline and who may decide (JSON).
ALTER TABLE pipeline_steps ADD COLUMN approval TEXT;
`,
  },
  {
    version: 12,
    name: 'API keys may expire and keep their previous secret for a grace after a rotation; the audit log',
    sql: `
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN rotated_at INTEGER;
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_expires_at INTEGER;
CREATE INDEX api_keys_by_previous_hash ON api_keys (previous_hash) WHERE previous_hash IS NOT NULL;
CREATE TABLE audit_log (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  at      INTEGER NOT NULL,
  actor   TEXT    NOT NULL,
  address TEXT,
  action  TEXT    NOT NULL,
  target  TEXT    NOT NULL,
  details TEXT    NOT NULL
);
CREATE INDEX audit_log_by_at ON audit_log (at);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
`,
  },
  {
    version: 13,
    name: 'fair sharing costs nothing to a task without a concurrency key: queued_groups and the leased index hold keyed tasks only',
    sql: `
-- What a claim takes turns over, by (requirement set, type, priority), is task_counts' queued rows;
-- queued_groups now counts only the keyed part of each, so that a task without a key writes no
-- group row (the unkeyed count is the queued count less the keyed ones: see types.ts).
DROP TRIGGER tasks_queued_group_insert;
DROP TRIGGER tasks_queued_group_enter;
DROP TRIGGER tasks_queued_group_leave;
DROP TRIGGER tasks_queued_group_delete;
DELETE FROM queued_groups WHERE ckey = '';
CREATE TRIGGER tasks_queued_group_insert AFTER INSERT ON tasks WHEN NEW.status = 'queued' AND NEW.concurrency_key <> '' BEGIN
  INSERT INTO queued_groups VALUES (NEW.req_key, NEW.type, NEW.priority, NEW.concurrency_key, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_queued_group_enter AFTER UPDATE OF status ON tasks
  WHEN NEW.status = 'queued' AND OLD.status <> 'queued' AND NEW.concurrency_key <> '' BEGIN
  INSERT INTO queued_groups VALUES (NEW.req_key, NEW.type, NEW.priority, NEW.concurrency_key, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_queued_group_leave AFTER UPDATE OF status ON tasks
  WHEN OLD.status = 'queued' AND NEW.status <> 'queued' AND OLD.concurrency_key <> '' BEGIN
  UPDATE queued_groups SET n = n - 1
    WHERE req_key = OLD.req_key AND type = OLD.type AND priority = OLD.priority AND ckey = OLD.concurrency_key;
END;
CREATE TRIGGER tasks_queued_group_delete AFTER DELETE ON tasks WHEN OLD.status = 'queued' AND OLD.concurrency_key <> '' BEGIN
  UPDATE queued_groups SET n = n - 1
    WHERE req_key = OLD.req_key AND type = OLD.type AND priority = OLD.priority AND ckey = OLD.concurrency_key;
END;
-- Leased tasks of a type with a limit: task_counts has them by type, this index by key.
DROP INDEX tasks_leased_by_type;
CREATE INDEX tasks_leased_keyed ON tasks (type, concurrency_key) WHERE status = 'leased' AND concurrency_key <> '';
`,
  },
  {
    version: 14,
    name: 'the line of lock requests waiting for their resources (POST /v1/locks with waitMs), first come first served',
    sql: `
-- One row per request waiting; seq is its place in line. A row lives until its request gets its
-- resources (deleted in the same write), gives up, or its deadline passes (its node died).
CREATE TABLE lock_waiters (
  seq       INTEGER PRIMARY KEY AUTOINCREMENT,
  resources TEXT    NOT NULL,
  deadline  INTEGER NOT NULL
);
`,
  },
  {
    version: 15,
    name: 'tasks and agents belong to a namespace (default for everything stored before)',
    sql: `
-- A task's namespace also lives in its req_key (and, outside default, in its stored idempotency
-- key; see domain/requirements.ts and store/rows.ts), so that claims, counts and idempotency keep
-- their indexes; this column is what lists and by-id reads filter on.
ALTER TABLE tasks ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE agents ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
`,
  },
  {
    version: 16,
    name: 'locks, the lock line and schedules belong to a namespace: the same resource may be locked, and the same schedule name taken, in two namespaces at once',
    sql: `
ALTER TABLE locks ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX locks_by_namespace ON locks (namespace, seq);
-- A resource is held once per namespace: the key that makes a second holder impossible, and the
-- index every probe of an acquire (exact names, the range below a directory) reads.
CREATE TABLE lock_resources_ns (
  resource  TEXT    NOT NULL,
  lock_seq  INTEGER NOT NULL REFERENCES locks (seq) ON DELETE CASCADE,
  namespace TEXT    NOT NULL DEFAULT 'default',
  PRIMARY KEY (namespace, resource)
) WITHOUT ROWID;
INSERT INTO lock_resources_ns (resource, lock_seq) SELECT resource, lock_seq FROM lock_resources;
DROP TABLE lock_resources;
ALTER TABLE lock_resources_ns RENAME TO lock_resources;
CREATE INDEX lock_resources_by_lock ON lock_resources (lock_seq);
ALTER TABLE lock_waiters ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';

-- Names are unique per namespace; SQLite cannot drop the old UNIQUE (name), so the table is rebuilt.
CREATE TABLE schedules_ns (
  seq          INTEGER PRIMARY KEY,
  name         TEXT    NOT NULL,
  cron         TEXT    NOT NULL,
  timezone     TEXT    NOT NULL,
  task         TEXT    NOT NULL,
  overlap      TEXT    NOT NULL,
  catch_up     TEXT    NOT NULL,
  paused       INTEGER NOT NULL DEFAULT 0,
  next_fire_at INTEGER NOT NULL,
  last_fire_at INTEGER,
  last_task_id INTEGER,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  namespace    TEXT    NOT NULL DEFAULT 'default',
  UNIQUE (namespace, name)
);
INSERT INTO schedules_ns (seq, name, cron, timezone, task, overlap, catch_up, paused, next_fire_at, last_fire_at, last_task_id, created_at, updated_at)
  SELECT seq, name, cron, timezone, task, overlap, catch_up, paused, next_fire_at, last_fire_at, last_task_id, created_at, updated_at FROM schedules;
DROP TABLE schedules;
ALTER TABLE schedules_ns RENAME TO schedules;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
`,
  },
  {
    version: 17,
    name: 'pipeline runs, API-defined pipelines and cases belong to a namespace; idempotency keys and pipeline names are per namespace',
    sql: `
-- Two namespaces may use the same idempotency key. SQLite cannot drop the column's UNIQUE, so
-- pipeline_runs is built anew; its steps are set aside first, so that dropping the old table
-- (an implicit DELETE, with foreign keys on) cascades to nothing. Ids are kept.
CREATE TABLE pipeline_steps_aside AS SELECT * FROM pipeline_steps;
DROP TABLE pipeline_steps;
CREATE TABLE pipeline_runs_new (
  id               INTEGER PRIMARY KEY,
  namespace        TEXT    NOT NULL DEFAULT 'default',
  pipeline         TEXT    NOT NULL,
  status           TEXT    NOT NULL,
  input            TEXT    NOT NULL,
  output           TEXT,
  error            TEXT,
  idempotency_key  TEXT,
  request_hash     TEXT,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  finished_at      INTEGER,
  owner            TEXT,
  lease_expires_at INTEGER,
  pipeline_version INTEGER,
  UNIQUE (namespace, idempotency_key)
);
INSERT INTO pipeline_runs_new (id, pipeline, status, input, output, error, idempotency_key, request_hash, created_at, updated_at,
  finished_at, owner, lease_expires_at, pipeline_version)
  SELECT id, pipeline, status, input, output, error, idempotency_key, request_hash, created_at, updated_at,
    finished_at, owner, lease_expires_at, pipeline_version FROM pipeline_runs;
-- Its counting triggers go with it (an implicit DELETE fires none), and come back below.
DROP TABLE pipeline_runs;
ALTER TABLE pipeline_runs_new RENAME TO pipeline_runs;
CREATE INDEX pipeline_runs_unfinished   ON pipeline_runs (id) WHERE status IN ('queued', 'running');
CREATE INDEX pipeline_runs_by_pipeline  ON pipeline_runs (pipeline, id);
CREATE INDEX pipeline_runs_by_status    ON pipeline_runs (status, id);
CREATE INDEX pipeline_runs_by_namespace ON pipeline_runs (namespace, id);
CREATE TRIGGER pipeline_runs_count_insert AFTER INSERT ON pipeline_runs BEGIN
  INSERT INTO pipeline_run_counts VALUES (NEW.pipeline, NEW.status, 1) ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER pipeline_runs_count_update AFTER UPDATE OF status ON pipeline_runs WHEN OLD.status <> NEW.status BEGIN
  UPDATE pipeline_run_counts SET n = n - 1 WHERE pipeline = OLD.pipeline AND status = OLD.status;
  INSERT INTO pipeline_run_counts VALUES (NEW.pipeline, NEW.status, 1) ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER pipeline_runs_count_delete AFTER DELETE ON pipeline_runs BEGIN
  UPDATE pipeline_run_counts SET n = n - 1 WHERE pipeline = OLD.pipeline AND status = OLD.status;
END;
CREATE TABLE pipeline_steps (
  run_id          INTEGER NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
  position        INTEGER NOT NULL,
  name            TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  output          TEXT,
  error           TEXT,
  started_at      INTEGER,
  finished_at     INTEGER,
  next_attempt_at INTEGER,
  approval        TEXT,
  PRIMARY KEY (run_id, position)
) WITHOUT ROWID;
INSERT INTO pipeline_steps (run_id, position, name, status, attempts, output, error, started_at, finished_at, next_attempt_at, approval)
  SELECT run_id, position, name, status, attempts, output, error, started_at, finished_at, next_attempt_at, approval FROM pipeline_steps_aside;
DROP TABLE pipeline_steps_aside;
CREATE UNIQUE INDEX pipeline_steps_by_name ON pipeline_steps (run_id, name);

-- Two namespaces may define the same pipeline name, each with its own versions.
CREATE TABLE pipeline_versions_new (
  namespace  TEXT    NOT NULL DEFAULT 'default',
  name       TEXT    NOT NULL,
  version    INTEGER NOT NULL,
  definition TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, name, version)
) WITHOUT ROWID;
INSERT INTO pipeline_versions_new (name, version, definition, created_at) SELECT name, version, definition, created_at FROM pipeline_versions;
DROP TABLE pipeline_versions;
ALTER TABLE pipeline_versions_new RENAME TO pipeline_versions;

-- A case gathers runs of one namespace: that of the run that opened it.
ALTER TABLE cases ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX cases_by_namespace ON cases (namespace, id);
`,
  },
  {
    version: 18,
    name: 'namespaces, with their quotas; API keys scoped to a list of them',
    sql: `
-- A namespace is known once a key is scoped to it or an admin sets its quotas; 'default' always is.
-- quotas: JSON {maxQueuedTasks, maxTasksPerSecond, maxAgents}, each absent or null for no limit.
CREATE TABLE namespaces (
  name       TEXT    PRIMARY KEY,
  quotas     TEXT    NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
INSERT INTO namespaces (name, created_at, updated_at) VALUES ('default', 0, 0);
-- A JSON array of names; ["*"] reaches every namespace, which every key made before namespaces did.
ALTER TABLE api_keys ADD COLUMN namespaces TEXT NOT NULL DEFAULT '["*"]';
`,
  },
  {
    version: 19,
    name: "a task type's policy, pauses, rate windows, round-robin turns and usage are its namespace's",
    sql: `
-- team-a's limit on a type holds back none of team-b's tasks of the same name; each namespace takes
-- its own turns. Everything stored before is default's.
CREATE TABLE type_policies_ns (
  namespace  TEXT    NOT NULL,
  type       TEXT    NOT NULL,
  policy     TEXT    NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, type)
) WITHOUT ROWID;
INSERT INTO type_policies_ns SELECT 'default', type, policy, updated_at FROM type_policies;
DROP TABLE type_policies;
ALTER TABLE type_policies_ns RENAME TO type_policies;
-- ckey '' pauses the whole type.
CREATE TABLE type_pauses_ns (
  namespace  TEXT    NOT NULL,
  type       TEXT    NOT NULL,
  ckey       TEXT    NOT NULL,
  until      INTEGER,
  reason     TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, type, ckey)
) WITHOUT ROWID;
INSERT INTO type_pauses_ns SELECT 'default', type, ckey, until, reason, created_at FROM type_pauses;
DROP TABLE type_pauses;
ALTER TABLE type_pauses_ns RENAME TO type_pauses;
ALTER TABLE type_starts ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
DROP INDEX type_starts_by_type;
CREATE INDEX type_starts_by_type ON type_starts (namespace, type, at);
CREATE TABLE fair_keys_ns (
  namespace TEXT NOT NULL,
  ckey      TEXT NOT NULL,
  pass      REAL NOT NULL,
  PRIMARY KEY (namespace, ckey)
) WITHOUT ROWID;
INSERT INTO fair_keys_ns SELECT 'default', ckey, pass FROM fair_keys;
DROP TABLE fair_keys;
ALTER TABLE fair_keys_ns RENAME TO fair_keys;
-- Each namespace's round-robin clock; one that has none starts at 0.
CREATE TABLE fair_clocks (namespace TEXT PRIMARY KEY, clock REAL NOT NULL) WITHOUT ROWID;
INSERT INTO fair_clocks SELECT 'default', clock FROM fair_clock;
DROP TABLE fair_clock;
ALTER TABLE task_usage ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
DROP INDEX task_usage_by_type;
CREATE INDEX task_usage_by_type ON task_usage (namespace, type, at);
`,
  },
  {
    version: 20,
    name: 'the tasks of namespaces other than default, indexed by namespace for their lists',
    sql: `
-- A list of team-a's tasks reads this index instead of every task in id order; a task of default
-- (the common case) is not in it and costs it no write, and a task's namespace and id never change.
CREATE INDEX tasks_outside_default ON tasks (namespace, id) WHERE namespace <> 'default';
`,
  },
  {
    version: 21,
    name: 'the claim that leased a task',
    sql: `
-- As on PostgreSQL, where a claim's answer can be lost with its connection and is read back by it.
-- A claim here is never lost; the column keeps the two stores alike.
ALTER TABLE tasks ADD COLUMN claim_id INTEGER;
`,
  },
  {
    version: 22,
    name: 'long payloads in a table of their own',
    sql: `
-- A payload longer than INLINE_PAYLOAD_MAX (database.ts) is kept here, its task's payload column
-- left '': an update writes the task's row again whole, and a lease, an extension or a completion
-- would write the prompt to the WAL again each time. Written once with its task, deleted with it.
-- Payloads stored before this migration stay in their rows, which reads take as they are. A later
-- migration that rebuilds tasks must carry these rows over: dropping tasks deletes them (the cascade).
CREATE TABLE task_payloads (
  task_id INTEGER PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
  payload TEXT    NOT NULL
);
`,
  },
];

/**
 * The store was migrated by a later release than this one. Its later migrations may have changed what
 * a column holds (since migration 22 a task's payload column may be '', its payload elsewhere), so
 * this release would misread it.
 */
export class NewerSchemaError extends Error {
  constructor(
    readonly found: number,
    readonly known: number,
  ) {
    super(`its schema is at version ${found}, from a later fleetd than this one (version ${known})`);
    this.name = 'NewerSchemaError';
  }
}

/** Applies the migrations this database lacks, each in its own transaction; refuses a store a later release migrated. */
export function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
  const applied = new Set(db.prepare('SELECT version FROM schema_migrations').pluck().all() as number[]);
  const known = migrations[migrations.length - 1].version;
  const found = Math.max(0, ...applied);
  if (found > known) throw new NewerSchemaError(found, known);
  for (const m of migrations) {
    if (applied.has(m.version)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
    })();
  }
}
