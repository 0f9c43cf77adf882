import type { PostgresDatabase } from './database.js';
import { ANNOUNCE_UNLEASED_FUNCTION, CLAIM_TICK_FUNCTION, WHOLE_BATCH_FUNCTION } from './tasks.js';
import { PLAN_GROUPS_FUNCTION } from './types.js';

/**
 * Versioned schema for the PostgreSQL driver. A migration is never edited once released: a change
 * is a new entry. They run at start, each in its own transaction, under an advisory lock so that
 * nodes starting together do not race; applied versions are recorded in schema_migrations.
 */
export const migrations: { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'tasks, agents, locks, their counters and wake-up notifications',
    sql: `
CREATE TABLE tasks (
  id               BIGSERIAL PRIMARY KEY,
  type             TEXT    NOT NULL,
  req_key          TEXT    NOT NULL,
  payload          TEXT    NOT NULL,
  priority         INTEGER NOT NULL,
  status           TEXT    NOT NULL,
  idempotency_key  TEXT    UNIQUE,
  request_hash     TEXT,
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  lease_ms         BIGINT  NOT NULL,
  backoff_ms       BIGINT  NOT NULL,
  run_at           BIGINT  NOT NULL,
  created_at       BIGINT  NOT NULL,
  updated_at       BIGINT  NOT NULL,
  claimed_at       BIGINT,
  completed_at     BIGINT,
  agent_id         TEXT,
  lease_expires_at BIGINT,
  result           TEXT,
  error            TEXT
);
-- The claim: one ordered index range per requirement set, so a backlog of 100,000 tasks of one
-- type costs the claim of another type nothing (the planner never sorts or filters that backlog).
CREATE INDEX tasks_claim     ON tasks (req_key, priority DESC, id) WHERE status = 'queued';
CREATE INDEX tasks_scheduled ON tasks (run_at)           WHERE status = 'scheduled';
CREATE INDEX tasks_leases    ON tasks (lease_expires_at) WHERE status = 'leased';
CREATE INDEX tasks_in_flight ON tasks (agent_id)         WHERE status = 'leased';
CREATE INDEX tasks_finished  ON tasks (completed_at)     WHERE completed_at IS NOT NULL;
CREATE INDEX tasks_by_status ON tasks (status, id);
CREATE INDEX tasks_by_type   ON tasks (type, id);
CREATE INDEX tasks_by_agent  ON tasks (agent_id, id)     WHERE agent_id IS NOT NULL;

-- Counters kept by statement-level triggers in the same transaction as the write, so /v1/stats
-- never scans tasks and the counts always equal a recount. A counter row stays locked until its
-- transaction commits, so one row per group would make every concurrent writer wait for the
-- others' commits: each connection writes its own shard (by backend pid) and readers sum the
-- shards. Deltas are summed per statement and applied in key order, so writers that do share a
-- shard lock its rows in one order and cannot deadlock on them.
CREATE TABLE task_counts (
  type     TEXT    NOT NULL,
  req_key  TEXT    NOT NULL,
  priority INTEGER NOT NULL,
  status   TEXT    NOT NULL,
  shard    INTEGER NOT NULL,
  n        BIGINT  NOT NULL,
  PRIMARY KEY (status, req_key, type, priority, shard)
);

-- A claimable task wakes long-polls on every node: on commit, PostgreSQL delivers one
-- notification per statement that made tasks queued, counted by requirement key. Channels are
-- database-wide, so the payload names the schema (other clusters may share the database), and the
-- sender's application_name lets a node skip its own notifications (it woke its waiters already).
CREATE FUNCTION fleetd_notify_available(counts jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  payload text := jsonb_build_object('schema', current_schema(), 'node', current_setting('application_name'), 'byRequirement', counts)::text;
  k text;
BEGIN
  IF counts = '{}'::jsonb THEN RETURN; END IF;
  IF octet_length(payload) < 7900 THEN
    PERFORM pg_notify('fleetd_tasks_available', payload);
  ELSE
    -- NOTIFY payloads are limited to 8000 bytes: split a large one by key.
    FOR k IN SELECT jsonb_object_keys(counts) LOOP
      PERFORM pg_notify('fleetd_tasks_available',
        jsonb_build_object('schema', current_schema(), 'node', current_setting('application_name'),
          'byRequirement', jsonb_build_object(k, counts -> k))::text);
    END LOOP;
  END IF;
END $$;

CREATE FUNCTION fleetd_task_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts AS c (type, req_key, priority, status, shard, n)
    SELECT type, req_key, priority, status, pg_backend_pid() % 32, count(*) FROM new_rows
    GROUP BY status, req_key, type, priority ORDER BY status, req_key, type, priority
    ON CONFLICT (status, req_key, type, priority, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  PERFORM fleetd_notify_available(coalesce(
    (SELECT jsonb_object_agg(req_key, n) FROM (SELECT req_key, count(*) AS n FROM new_rows WHERE status = 'queued' GROUP BY req_key) q),
    '{}'::jsonb));
  RETURN NULL;
END $$;

CREATE FUNCTION fleetd_task_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts AS c (type, req_key, priority, status, shard, n)
    SELECT type, req_key, priority, status, pg_backend_pid() % 32, sum(d) FROM (
      SELECT type, req_key, priority, status, 1 AS d FROM new_rows
      UNION ALL
      SELECT type, req_key, priority, status, -1 AS d FROM old_rows
    ) x
    GROUP BY status, req_key, type, priority HAVING sum(d) <> 0 ORDER BY status, req_key, type, priority
    ON CONFLICT (status, req_key, type, priority, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  PERFORM fleetd_notify_available(coalesce(
    (SELECT jsonb_object_agg(req_key, n) FROM (
      SELECT nw.req_key, count(*) AS n FROM new_rows nw JOIN old_rows o ON o.id = nw.id
      WHERE nw.status = 'queued' AND o.status <> 'queued' GROUP BY nw.req_key) q),
    '{}'::jsonb));
  RETURN NULL;
END $$;

CREATE FUNCTION fleetd_task_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts AS c (type, req_key, priority, status, shard, n)
    SELECT type, req_key, priority, status, pg_backend_pid() % 32, -count(*) FROM old_rows
    GROUP BY status, req_key, type, priority ORDER BY status, req_key, type, priority
    ON CONFLICT (status, req_key, type, priority, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
  RETURN NULL;
END $$;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_task_counts_insert();
CREATE TRIGGER tasks_count_update AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_task_counts_update();
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_task_counts_delete();

CREATE TABLE agents (
  seq               BIGSERIAL PRIMARY KEY,
  id                TEXT    NOT NULL UNIQUE,
  name              TEXT    NOT NULL,
  capabilities      TEXT[]  NOT NULL,
  labels            TEXT    NOT NULL,
  max_concurrency   INTEGER NOT NULL,
  token_hash        TEXT    NOT NULL,
  status            TEXT    NOT NULL,
  created_at        BIGINT  NOT NULL,
  last_heartbeat_at BIGINT  NOT NULL
);
CREATE INDEX agents_by_status     ON agents (status, last_heartbeat_at);
CREATE INDEX agents_by_status_seq ON agents (status, seq);
CREATE INDEX agents_by_capability ON agents USING gin (capabilities);

CREATE TABLE agent_counts (status TEXT PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO agent_counts VALUES ('online', 0), ('stale', 0), ('offline', 0);
CREATE FUNCTION fleetd_agent_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE agent_counts c SET n = c.n + d.n FROM (SELECT status, count(*) AS n FROM new_rows GROUP BY status) d
      WHERE c.status = d.status;
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE agent_counts c SET n = c.n - d.n FROM (SELECT status, count(*) AS n FROM old_rows GROUP BY status) d
      WHERE c.status = d.status;
  ELSE
    UPDATE agent_counts c SET n = c.n + d.n FROM (
      SELECT status, sum(x) AS n FROM (
        SELECT status, 1 AS x FROM new_rows UNION ALL SELECT status, -1 FROM old_rows) u
      GROUP BY status HAVING sum(x) <> 0) d
      WHERE c.status = d.status;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER agents_count_insert AFTER INSERT ON agents REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_agent_counts();
CREATE TRIGGER agents_count_update AFTER UPDATE ON agents REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_agent_counts();
CREATE TRIGGER agents_count_delete AFTER DELETE ON agents REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_agent_counts();

CREATE TABLE locks (
  seq         BIGSERIAL PRIMARY KEY,
  id          TEXT    NOT NULL UNIQUE,
  agent_id    TEXT    NOT NULL,
  resources   TEXT    NOT NULL,
  description TEXT    NOT NULL,
  created_at  BIGINT  NOT NULL,
  expires_at  BIGINT  NOT NULL
);
CREATE INDEX locks_by_expiry ON locks (expires_at);
CREATE INDEX locks_by_agent  ON locks (agent_id, seq);
CREATE TABLE lock_resources (
  resource TEXT   PRIMARY KEY,
  lock_seq BIGINT NOT NULL REFERENCES locks (seq) ON DELETE CASCADE
);
CREATE INDEX lock_resources_by_lock ON lock_resources (lock_seq);
`,
  },
  {
    version: 2,
    name: 'API keys, and agents found by their token',
    sql: `
-- Keys are stored as the SHA-256 of the secret: it is shown once, when created, and never again.
CREATE TABLE api_keys (
  id         TEXT    PRIMARY KEY,
  name       TEXT    NOT NULL,
  scope      TEXT    NOT NULL,
  hash       TEXT    NOT NULL UNIQUE,
  created_at BIGINT  NOT NULL,
  revoked_at BIGINT
);
CREATE UNIQUE INDEX agents_by_token ON agents (token_hash);
`,
  },
  {
    version: 3,
    name: 'pipeline runs leased to the node driving them, their steps and counters; cases',
    sql: `
CREATE TABLE pipeline_runs (
  id               BIGSERIAL PRIMARY KEY,
  pipeline         TEXT   NOT NULL,
  status           TEXT   NOT NULL,
  input            TEXT   NOT NULL,
  output           TEXT,
  error            TEXT,
  idempotency_key  TEXT   UNIQUE,
  request_hash     TEXT,
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  finished_at      BIGINT,
  -- The node driving the run, until lease_expires_at unless it renews; NULL once finished or released.
  owner            TEXT,
  lease_expires_at BIGINT
);
-- Taking over runs reads the unfinished ones only; listing filters by pipeline or status, newest first.
CREATE INDEX pipeline_runs_unfinished  ON pipeline_runs (id) WHERE status IN ('queued', 'running');
CREATE INDEX pipeline_runs_by_pipeline ON pipeline_runs (pipeline, id);
CREATE INDEX pipeline_runs_by_status   ON pipeline_runs (status, id);

CREATE TABLE pipeline_steps (
  run_id          BIGINT  NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
  position        INTEGER NOT NULL,
  name            TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  output          TEXT,
  error           TEXT,
  started_at      BIGINT,
  finished_at     BIGINT,
  next_attempt_at BIGINT,
  PRIMARY KEY (run_id, position),
  UNIQUE (run_id, name)
);

-- Runs are few and slow (each a chain of LLM calls), so one counter row per pipeline and status,
-- kept by a row-level trigger, costs no contention worth sharding.
CREATE TABLE pipeline_run_counts (
  pipeline TEXT   NOT NULL,
  status   TEXT   NOT NULL,
  n        BIGINT NOT NULL,
  PRIMARY KEY (pipeline, status)
);
CREATE FUNCTION fleetd_pipeline_run_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE pipeline_run_counts SET n = n - 1 WHERE pipeline = OLD.pipeline AND status = OLD.status;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO pipeline_run_counts AS c VALUES (NEW.pipeline, NEW.status, 1)
      ON CONFLICT (pipeline, status) DO UPDATE SET n = c.n + 1;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER pipeline_runs_count_insert AFTER INSERT OR DELETE ON pipeline_runs
  FOR EACH ROW EXECUTE FUNCTION fleetd_pipeline_run_counts();
CREATE TRIGGER pipeline_runs_count_update AFTER UPDATE OF status ON pipeline_runs
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION fleetd_pipeline_run_counts();

-- Every write to a case takes the next version, so that nodes catch up on what changed. Case writes
-- take turns under an advisory lock (caseExclusive), so versions also commit in order.
CREATE SEQUENCE case_versions;
CREATE TABLE cases (
  id         BIGSERIAL PRIMARY KEY,
  title      TEXT   NOT NULL,
  -- The mean of the members' unit vectors (JSON array), what a new member is compared with.
  centroid   TEXT   NOT NULL,
  size       INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  version    BIGINT NOT NULL DEFAULT nextval('case_versions')
);
CREATE INDEX cases_by_version ON cases (version);
-- A run belongs to at most one case: assigning it again (a step repeated after a restart) changes nothing.
CREATE TABLE case_members (
  run_id     BIGINT PRIMARY KEY,
  case_id    BIGINT NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
  similarity DOUBLE PRECISION NOT NULL,
  text       TEXT   NOT NULL,
  added_at   BIGINT NOT NULL
);
CREATE INDEX case_members_by_case ON case_members (case_id, run_id);
`,
  },
  {
    version: 4,
    name: 'tasks carry execution and schedule timeouts, tags and metadata',
    sql: `
ALTER TABLE tasks ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
-- Each tag of each task once, to list a tag's tasks without reading the others.
CREATE TABLE task_tags (
  tag     TEXT   NOT NULL,
  task_id BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  PRIMARY KEY (tag, task_id)
);
CREATE INDEX task_tags_by_task ON task_tags (task_id);
ALTER TABLE tasks ADD COLUMN execution_timeout_ms BIGINT;
ALTER TABLE tasks ADD COLUMN schedule_timeout_ms BIGINT;
-- runAt + scheduleTimeoutMs while the task has never been claimed; its first claim clears it.
ALTER TABLE tasks ADD COLUMN expires_at BIGINT;
CREATE INDEX tasks_expiring ON tasks (expires_at) WHERE expires_at IS NOT NULL AND status IN ('queued', 'scheduled');
`,
  },
  {
    version: 5,
    name: 'the progress, log lines and output agents report on their tasks, a bounded tail per task',
    sql: `
-- How much of each kind a task has had reported, ever, and its last sequence number: what the next
-- entry's seq and mark follow from. Its row lock also puts one task's concurrent appends in turn.
CREATE TABLE task_activity_totals (
  task_id      BIGINT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
  seq          BIGINT NOT NULL,
  progress     BIGINT NOT NULL,
  log_lines    BIGINT NOT NULL,
  output_bytes BIGINT NOT NULL
);
-- mark: how much of its kind came before the entry (lines, bytes, progress reports), so that the
-- oldest beyond the bounds go by one range delete on (task_id, kind, mark).
CREATE TABLE task_activity (
  task_id  BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  seq      BIGINT NOT NULL,
  kind     TEXT   NOT NULL,
  mark     BIGINT NOT NULL,
  at       BIGINT NOT NULL,
  level    TEXT,
  message  TEXT,
  progress DOUBLE PRECISION,
  text     TEXT,
  PRIMARY KEY (task_id, seq)
);
CREATE INDEX task_activity_by_kind ON task_activity (task_id, kind, mark);
`,
  },
  {
    version: 6,
    name: 'fair sharing: concurrency keys, type policies and pauses, rate-limit starts, round-robin turns',
    sql: `
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT NOT NULL DEFAULT '';
-- Resources a task locks while it is leased (JSON array); its lock is named task-<id>.
ALTER TABLE tasks ADD COLUMN locks TEXT NOT NULL DEFAULT '[]';
CREATE INDEX tasks_queued_locking ON tasks (id) WHERE status = 'queued' AND locks <> '[]';
-- Queued tasks by (requirement set, type, priority, key): what a claim takes turns over. Sharded
-- like task_counts, so that concurrent writers do not queue on one row.
CREATE TABLE queued_groups (
  req_key  TEXT    NOT NULL,
  type     TEXT    NOT NULL,
  priority INTEGER NOT NULL,
  ckey     TEXT    NOT NULL,
  shard    INTEGER NOT NULL,
  n        BIGINT  NOT NULL,
  PRIMARY KEY (req_key, type, priority, ckey, shard)
);
INSERT INTO queued_groups SELECT req_key, type, priority, concurrency_key, 0, count(*) FROM tasks WHERE status = 'queued'
  GROUP BY req_key, type, priority, concurrency_key;
CREATE FUNCTION fleetd_queued_groups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO queued_groups AS g (req_key, type, priority, ckey, shard, n)
      SELECT req_key, type, priority, concurrency_key, pg_backend_pid() % 32, count(*) FROM new_rows WHERE status = 'queued'
      GROUP BY req_key, type, priority, concurrency_key ORDER BY req_key, type, priority, concurrency_key
      ON CONFLICT (req_key, type, priority, ckey, shard) DO UPDATE SET n = g.n + EXCLUDED.n;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO queued_groups AS g (req_key, type, priority, ckey, shard, n)
      SELECT req_key, type, priority, concurrency_key, pg_backend_pid() % 32, sum(d) FROM (
        SELECT nw.req_key, nw.type, nw.priority, nw.concurrency_key, CASE WHEN nw.status = 'queued' THEN 1 ELSE -1 END AS d
        FROM new_rows nw JOIN old_rows o ON o.id = nw.id WHERE (nw.status = 'queued') <> (o.status = 'queued')
      ) x
      GROUP BY req_key, type, priority, concurrency_key HAVING sum(d) <> 0 ORDER BY req_key, type, priority, concurrency_key
      ON CONFLICT (req_key, type, priority, ckey, shard) DO UPDATE SET n = g.n + EXCLUDED.n;
    -- A task's locks belong to its lease: they go when the lease ends, whichever way it ends.
    DELETE FROM locks WHERE id IN (
      SELECT 'task-' || o.id FROM old_rows o JOIN new_rows nw ON nw.id = o.id
      WHERE o.status = 'leased' AND nw.status <> 'leased' AND o.locks <> '[]');
    -- A lease of a type with a policy ended: a task it held back may go now, on any node.
    IF EXISTS (SELECT 1 FROM type_policies) THEN
      PERFORM fleetd_notify_available(coalesce((
        SELECT jsonb_object_agg(req_key, n) FROM (
          SELECT g.req_key, least(sum(g.n), max(f.freed)) AS n FROM queued_groups g
          JOIN (SELECT o.type, count(*) AS freed FROM old_rows o JOIN new_rows nw ON nw.id = o.id
                WHERE o.status = 'leased' AND nw.status <> 'leased' AND o.type IN (SELECT type FROM type_policies) GROUP BY o.type) f
            ON f.type = g.type
          GROUP BY g.req_key HAVING sum(g.n) > 0) q), '{}'::jsonb));
    END IF;
  ELSE
    DELETE FROM locks WHERE id IN (SELECT 'task-' || id FROM old_rows WHERE status = 'leased' AND locks <> '[]');
    INSERT INTO queued_groups AS g (req_key, type, priority, ckey, shard, n)
      SELECT req_key, type, priority, concurrency_key, pg_backend_pid() % 32, -count(*) FROM old_rows WHERE status = 'queued'
      GROUP BY req_key, type, priority, concurrency_key ORDER BY req_key, type, priority, concurrency_key
      ON CONFLICT (req_key, type, priority, ckey, shard) DO UPDATE SET n = g.n + EXCLUDED.n;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER tasks_queued_groups_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_queued_groups();
CREATE TRIGGER tasks_queued_groups_update AFTER UPDATE ON tasks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_queued_groups();
CREATE TRIGGER tasks_queued_groups_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fleetd_queued_groups();
CREATE INDEX tasks_queued_by_group ON tasks (req_key, type, priority, concurrency_key, id) WHERE status = 'queued';
CREATE INDEX tasks_queued_keyed ON tasks (concurrency_key) WHERE status = 'queued' AND concurrency_key <> '';
CREATE INDEX tasks_leased_by_type ON tasks (type, concurrency_key) WHERE status = 'leased';

CREATE TABLE type_policies (
  type       TEXT   PRIMARY KEY,
  policy     TEXT   NOT NULL,
  updated_at BIGINT NOT NULL
);
-- ckey '' pauses the whole type.
CREATE TABLE type_pauses (
  type       TEXT   NOT NULL,
  ckey       TEXT   NOT NULL,
  until      BIGINT,
  reason     TEXT,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (type, ckey)
);
-- A pause that ends, or a policy that changes, may free tasks it held back: wake claims on every node.
CREATE FUNCTION fleetd_type_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fleetd_notify_available(coalesce((
    SELECT jsonb_object_agg(req_key, n) FROM (
      SELECT req_key, sum(n) AS n FROM queued_groups WHERE type = (CASE WHEN TG_OP = 'DELETE' THEN OLD.type ELSE NEW.type END)
      GROUP BY req_key HAVING sum(n) > 0) q), '{}'::jsonb));
  RETURN NULL;
END $$;
CREATE TRIGGER type_pauses_end AFTER DELETE ON type_pauses FOR EACH ROW EXECUTE FUNCTION fleetd_type_changed();
CREATE TRIGGER type_policies_change AFTER INSERT OR UPDATE ON type_policies FOR EACH ROW EXECUTE FUNCTION fleetd_type_changed();
CREATE TABLE type_starts (
  type TEXT   NOT NULL,
  ckey TEXT   NOT NULL,
  at   BIGINT NOT NULL
);
CREATE INDEX type_starts_by_type ON type_starts (type, at);
CREATE TABLE fair_keys (
  ckey TEXT PRIMARY KEY,
  pass DOUBLE PRECISION NOT NULL
);
CREATE TABLE fair_clock (id INTEGER PRIMARY KEY CHECK (id = 1), clock DOUBLE PRECISION NOT NULL);
INSERT INTO fair_clock VALUES (1, 0);
-- What agents reported their tasks used (tokens, cost), for the sums per type and key over an hour and a day.
CREATE TABLE task_usage (
  type          TEXT   NOT NULL,
  ckey          TEXT   NOT NULL,
  at            BIGINT NOT NULL,
  input_tokens  BIGINT NOT NULL,
  output_tokens BIGINT NOT NULL,
  cost_usd      DOUBLE PRECISION NOT NULL,
  model         TEXT
);
CREATE INDEX task_usage_by_type ON task_usage (type, at);
`,
  },
  {
    version: 7,
    name: 'tasks with a parent and dependencies: the waiting status and its edges; recurring schedules',
    sql: `
ALTER TABLE tasks ADD COLUMN parent_id BIGINT;
ALTER TABLE tasks ADD COLUMN deps_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN deps_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN on_dependency_failure TEXT;
-- Set (under the row's lock) when a task that depends on this one is inserted: a completion takes
-- the one-statement path only while it is false, so that releasing dependents shares its transaction.
ALTER TABLE tasks ADD COLUMN has_dependents BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX tasks_by_parent ON tasks (parent_id, id) WHERE parent_id IS NOT NULL;
-- One row per dependency; the outcome of depends_on is copied in when it finishes, so that the
-- dependent's agent gets it even after retention deleted the dependency.
CREATE TABLE task_dependencies (
  task_id    BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
  depends_on BIGINT NOT NULL,
  status     TEXT,
  result     TEXT,
  error      TEXT,
  PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_open ON task_dependencies (depends_on) WHERE status IS NULL;

-- Recurring schedules: next_fire_at is the next fire not yet submitted; nodes move it on with a
-- compare-and-set, and each fire's task has an idempotency key of the name and the fire time.
CREATE TABLE schedules (
  seq          BIGSERIAL PRIMARY KEY,
  name         TEXT    NOT NULL UNIQUE,
  cron         TEXT    NOT NULL,
  timezone     TEXT    NOT NULL,
  task         TEXT    NOT NULL,
  overlap      TEXT    NOT NULL,
  catch_up     TEXT    NOT NULL,
  paused       INTEGER NOT NULL DEFAULT 0,
  next_fire_at BIGINT  NOT NULL,
  last_fire_at BIGINT,
  last_task_id BIGINT,
  created_at   BIGINT  NOT NULL,
  updated_at   BIGINT  NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
`,
  },
  {
    version: 8,
    name: 'pipelines defined over the API, in versions; runs keep theirs; approval steps wait for a decision',
    sql: `
-- One row per version of a pipeline defined over the API; a NULL definition is a deletion.
CREATE TABLE pipeline_versions (
  name       TEXT    NOT NULL,
  version    INTEGER NOT NULL,
  definition TEXT,
  created_at BIGINT  NOT NULL,
  PRIMARY KEY (name, version)
);
-- The version a run was started with; NULL for a pipeline of the file (or of code).
ALTER TABLE pipeline_runs ADD COLUMN pipeline_version INTEGER;
-- An approval step waiting for a decision: its prompt, deadline and who may decide (JSON).
ALTER TABLE pipeline_steps ADD COLUMN approval TEXT;
`,
  },
  {
    version: 9,
    name: 'API keys may expire and keep their previous secret for a grace after a rotation; the audit log',
    sql: `
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN rotated_at BIGINT;
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_expires_at BIGINT;
CREATE INDEX api_keys_by_previous_hash ON api_keys (previous_hash) WHERE previous_hash IS NOT NULL;
CREATE TABLE audit_log (
  id      BIGSERIAL PRIMARY KEY,
  at      BIGINT NOT NULL,
  actor   TEXT   NOT NULL,
  address TEXT,
  action  TEXT   NOT NULL,
  target  TEXT   NOT NULL,
  details TEXT   NOT NULL
);
CREATE INDEX audit_log_by_at ON audit_log (at);
CREATE INDEX audit_log_by_target ON audit_log (target, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
`,
  },
  {
    version: 10,
    name: 'fair sharing costs nothing to a task without a concurrency key: queued_groups and the leased index hold keyed tasks only',
    sql: `
-- What a claim takes turns over, by (requirement set, type, priority), is task_counts' queued rows;
-- queued_groups now counts only the keyed part of each, so that a statement writing tasks without a
-- key or locks skips the trigger's work (the unkeyed count is the queued count less the keyed ones:
-- see types.ts). Wake-ups for a type read task_counts.
DELETE FROM queued_groups WHERE ckey = '';
CREATE OR REPLACE FUNCTION fleetd_queued_groups() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO queued_groups AS g (req_key, type, priority, ckey, shard, n)
      SELECT req_key, type, priority, concurrency_key, pg_backend_pid() % 32, count(*) FROM new_rows
      WHERE status = 'queued' AND concurrency_key <> ''
      GROUP BY req_key, type, priority, concurrency_key ORDER BY req_key, type, priority, concurrency_key
      ON CONFLICT (req_key, type, priority, ckey, shard) DO UPDATE SET n = g.n + EXCLUDED.n;
  ELSIF TG_OP = 'UPDATE' THEN
    -- A task's key and locks never change: the old rows have what the new rows have.
    IF EXISTS (SELECT 1 FROM new_rows WHERE concurrency_key <> '' OR locks <> '[]') THEN
      INSERT INTO queued_groups AS g (req_key, type, priority, ckey, shard, n)
        SELECT req_key, type, priority, concurrency_key, pg_backend_pid() % 32, sum(d) FROM (
          SELECT nw.req_key, nw.type, nw.priority, nw.concurrency_key, CASE WHEN nw.status = 'queued' THEN 1 ELSE -1 END AS d
          FROM new_rows nw JOIN old_rows o ON o.id = nw.id WHERE (nw.status = 'queued') <> (o.status = 'queued') AND nw.concurrency_key <> ''
        ) x
        GROUP BY req_key, type, priority, concurrency_key HAVING sum(d) <> 0 ORDER BY req_key, type, priority, concurrency_key
        ON CONFLICT (req_key, type, priority, ckey, shard) DO UPDATE SET n = g.n + EXCLUDED.n;
      -- A task's locks belong to its lease: they go when the lease ends, whichever way it ends.
      DELETE FROM locks WHERE id IN (
        SELECT 'task-' || o.id FROM old_rows o JOIN new_rows nw ON nw.id = o.id
        WHERE o.status = 'leased' AND nw.status <> 'leased' AND o.locks <> '[]');
    END IF;
    -- A lease of a type with a policy ended: a task it held back may go now, on any node.
    IF EXISTS (SELECT 1 FROM type_policies) THEN
      PERFORM fleetd_notify_available(coalesce((
        SELECT jsonb_object_agg(req_key, n) FROM (
          SELECT c.req_key, least(sum(c.n), max(f.freed)) AS n FROM task_counts c
          JOIN (SELECT o.type, count(*) AS freed FROM old_rows o JOIN new_rows nw ON nw.id = o.id
                WHERE o.status = 'leased' AND nw.status <> 'leased' AND o.type IN (SELECT type FROM type_policies) GROUP BY o.type) f
            ON f.type = c.type
          WHERE c.status = 'queued'
          GROUP BY c.req_key HAVING sum(c.n) > 0) q), '{}'::jsonb));
    END IF;
  ELSE
    DELETE FROM locks WHERE id IN (SELECT 'task-' || id FROM old_rows WHERE status = 'leased' AND locks <> '[]');
    INSERT INTO queued_groups AS g (req_key, type, priority, ckey, shard, n)
      SELECT req_key, type, priority, concurrency_key, pg_backend_pid() % 32, -count(*) FROM old_rows
      WHERE status = 'queued' AND concurrency_key <> ''
      GROUP BY req_key, type, priority, concurrency_key ORDER BY req_key, type, priority, concurrency_key
      ON CONFLICT (req_key, type, priority, ckey, shard) DO UPDATE SET n = g.n + EXCLUDED.n;
  END IF;
  RETURN NULL;
END $$;
-- A pause that ends, or a policy that changes, may free tasks it held back: wake claims on every node.
CREATE OR REPLACE FUNCTION fleetd_type_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fleetd_notify_available(coalesce((
    SELECT jsonb_object_agg(req_key, n) FROM (
      SELECT req_key, sum(n) AS n FROM task_counts WHERE status = 'queued' AND type = (CASE WHEN TG_OP = 'DELETE' THEN OLD.type ELSE NEW.type END)
      GROUP BY req_key HAVING sum(n) > 0) q), '{}'::jsonb));
  RETURN NULL;
END $$;
-- Leased tasks of a type with a limit: task_counts has them by type, this index by key.
DROP INDEX tasks_leased_by_type;
CREATE INDEX tasks_leased_keyed ON tasks (type, concurrency_key) WHERE status = 'leased' AND concurrency_key <> '';
`,
  },
  {
    version: 11,
    name: 'the line of lock requests waiting for their resources (POST /v1/locks with waitMs), first come first served across nodes',
    sql: `
-- One row per request waiting, on whichever node; seq is its place in line. A row lives until its
-- request gets its resources (deleted in the same transaction), gives up, or its deadline passes
-- (its node died).
CREATE TABLE lock_waiters (
  seq       BIGSERIAL PRIMARY KEY,
  resources JSONB  NOT NULL,
  deadline  BIGINT NOT NULL
);
`,
  },
  {
    version: 12,
    name: 'tasks and agents belong to a namespace (default for everything stored before)',
    sql: `
-- A task's namespace also lives in its req_key (and, outside default, in its stored idempotency
-- key; see domain/requirements.ts and store/rows.ts), so that claims, counts and idempotency keep
-- their indexes; this column is what lists and by-id reads filter on. A constant default: no rewrite.
ALTER TABLE tasks ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE agents ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
`,
  },
  {
    version: 13,
    name: 'locks, the lock line and schedules belong to a namespace: the same resource may be locked, and the same schedule name taken, in two namespaces at once',
    sql: `
ALTER TABLE locks ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX locks_by_namespace ON locks (namespace, seq);
-- A resource is held once per namespace: the key two racing acquirers collide on.
ALTER TABLE lock_resources ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE lock_resources DROP CONSTRAINT lock_resources_pkey, ADD PRIMARY KEY (namespace, resource);
ALTER TABLE lock_waiters ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE schedules ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE schedules DROP CONSTRAINT schedules_name_key, ADD CONSTRAINT schedules_namespace_name_key UNIQUE (namespace, name);
`,
  },
  {
    version: 14,
    name: 'pipeline runs, API-defined pipelines and cases belong to a namespace; idempotency keys and pipeline names are per namespace',
    sql: `
ALTER TABLE pipeline_runs ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
-- Two namespaces may use the same idempotency key.
ALTER TABLE pipeline_runs DROP CONSTRAINT pipeline_runs_idempotency_key_key;
ALTER TABLE pipeline_runs ADD CONSTRAINT pipeline_runs_by_key UNIQUE (namespace, idempotency_key);
CREATE INDEX pipeline_runs_by_namespace ON pipeline_runs (namespace, id);
-- Two namespaces may define the same pipeline name, each with its own versions.
ALTER TABLE pipeline_versions ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE pipeline_versions DROP CONSTRAINT pipeline_versions_pkey;
ALTER TABLE pipeline_versions ADD PRIMARY KEY (namespace, name, version);
-- A case gathers runs of one namespace: that of the run that opened it.
ALTER TABLE cases ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX cases_by_namespace ON cases (namespace, id);
`,
  },
  {
    version: 15,
    name: 'namespaces, with their quotas; API keys scoped to a list of them',
    sql: `
-- A namespace is known once a key is scoped to it or an admin sets its quotas; 'default' always is.
-- quotas: {maxQueuedTasks, maxTasksPerSecond, maxAgents}, each absent or null for no limit.
CREATE TABLE namespaces (
  name       TEXT   PRIMARY KEY,
  quotas     JSONB  NOT NULL DEFAULT '{}',
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
INSERT INTO namespaces (name, created_at, updated_at) VALUES ('default', 0, 0);
-- The names it reaches; {*} reaches every namespace, which every key made before namespaces did.
ALTER TABLE api_keys ADD COLUMN namespaces TEXT[] NOT NULL DEFAULT '{*}';
`,
  },
  {
    version: 16,
    name: "a task type's policy, pauses, rate windows, round-robin turns and usage are its namespace's",
    sql: `
-- team-a's limit on a type holds back none of team-b's tasks of the same name; each namespace takes
-- its own turns. Everything stored before is default's. (The wake-ups of migration 10 still name a
-- type alone: a change in one namespace wakes claims of that type in every namespace, which look
-- again and find what their own namespace allows.)
ALTER TABLE type_policies ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE type_policies DROP CONSTRAINT type_policies_pkey, ADD PRIMARY KEY (namespace, type);
ALTER TABLE type_pauses ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE type_pauses DROP CONSTRAINT type_pauses_pkey, ADD PRIMARY KEY (namespace, type, ckey);
ALTER TABLE type_starts ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
DROP INDEX type_starts_by_type;
CREATE INDEX type_starts_by_type ON type_starts (namespace, type, at);
ALTER TABLE fair_keys ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE fair_keys DROP CONSTRAINT fair_keys_pkey, ADD PRIMARY KEY (namespace, ckey);
-- Each namespace's round-robin clock; one that has none starts at 0.
CREATE TABLE fair_clocks (namespace TEXT PRIMARY KEY, clock DOUBLE PRECISION NOT NULL);
INSERT INTO fair_clocks SELECT 'default', clock FROM fair_clock;
-- The one row every claim under a plan locks, so that claims on all nodes count limits in turn.
ALTER TABLE fair_clock RENAME TO claim_lock;
ALTER TABLE claim_lock DROP COLUMN clock;
ALTER TABLE task_usage ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
DROP INDEX task_usage_by_type;
CREATE INDEX task_usage_by_type ON task_usage (namespace, type, at);
`,
  },
  {
    version: 17,
    name: 'the tasks of namespaces other than default, indexed by namespace for their lists',
    sql: `
-- A list of team-a's tasks reads this index instead of every task in id order; a task of default
-- (the common case) is not in it and costs it no write, and a task's namespace and id never change.
CREATE INDEX tasks_outside_default ON tasks (namespace, id) WHERE namespace <> 'default';
`,
  },
  {
    version: 18,
    name: 'the claim that leased a task',
    sql: `
-- Every claim names itself, as a receipt handle does: a claim whose answer was lost with its
-- connection (committed all the same) is read back by it. Not indexed: it is read only among the
-- few tasks leased to one agent.
ALTER TABLE tasks ADD COLUMN claim_id BIGINT;
`,
  },
];

/**
 * Applies the migrations this schema lacks, under an advisory lock so that nodes starting together
 * take turns (the second finds them applied).
 */
export function migrate(db: PostgresDatabase): Promise<void> {
  return db.transaction(async (q) => {
    await q('SELECT pg_advisory_xact_lock(hashtext($1))', [`fleetd-migrate:${db.schema}`]);
    await q(`CREATE SCHEMA IF NOT EXISTS ${db.schema}`);
    await q('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
    const applied = new Set((await q<{ version: number }>('SELECT version FROM schema_migrations')).map((r) => r.version));
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      await q(m.sql);
      await q('INSERT INTO schema_migrations VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
    }
    // Not migrations: the functions of the hot path's statements, this release's versions (hotPathFunction).
    for (const f of [ANNOUNCE_UNLEASED_FUNCTION, CLAIM_TICK_FUNCTION, WHOLE_BATCH_FUNCTION, PLAN_GROUPS_FUNCTION]) await q(f.create);
    // Its predecessor, which took the claims only, inside a transaction that had locked the agents.
    await q('DROP FUNCTION IF EXISTS fleetd_claim_many(jsonb)');
  });
}
