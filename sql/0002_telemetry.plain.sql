-- Telemetry on plain PostgreSQL: raw samples range-partitioned by UTC day (partitions
-- created ahead and dropped after the retention period by the hub's maintenance job, a
-- DEFAULT partition so no COPY ever fails for want of one), and rollup tables the hub
-- keeps up to date. The TimescaleDB variant (0002_telemetry.timescaledb.sql) offers the
-- same tables and columns, so queries are the same on both.

CREATE TABLE gpu_metrics (
    time       timestamptz NOT NULL,
    machine_id text NOT NULL,
    gpu_index  smallint NOT NULL,
    util       real NOT NULL,  -- percent
    mem_used   real NOT NULL,  -- MiB
    mem_total  real NOT NULL,  -- MiB
    temp       real NOT NULL,  -- degrees C
    power      real NOT NULL   -- W
) PARTITION BY RANGE (time);
CREATE INDEX gpu_metrics_machine_time_idx ON gpu_metrics (machine_id, time DESC);
CREATE INDEX gpu_metrics_time_idx ON gpu_metrics USING brin (time);
CREATE TABLE gpu_metrics_default PARTITION OF gpu_metrics DEFAULT;

CREATE TABLE machine_metrics (
    time       timestamptz NOT NULL,
    machine_id text NOT NULL,
    cpu_util   real NOT NULL,  -- percent
    mem_used   real NOT NULL,  -- GB
    mem_total  real NOT NULL,  -- GB
    disk_used  real NOT NULL,  -- GB
    disk_total real NOT NULL   -- GB
) PARTITION BY RANGE (time);
CREATE INDEX machine_metrics_machine_time_idx ON machine_metrics (machine_id, time DESC);
CREATE INDEX machine_metrics_time_idx ON machine_metrics USING brin (time);
CREATE TABLE machine_metrics_default PARTITION OF machine_metrics DEFAULT;

-- Rollups per machine and bucket, kept as sums and counts so that coarser buckets and
-- fleet-wide figures are exact: avg util = util_sum / samples (an average of averages
-- would be wrong), avg memory use = mem_used_sum / samples, avg power = power_sum / samples.
CREATE TABLE gpu_metrics_1m (
    bucket       timestamptz NOT NULL,
    machine_id   text NOT NULL,
    samples      integer NOT NULL,
    util_sum     double precision NOT NULL,
    util_max     real NOT NULL,
    mem_used_sum double precision NOT NULL,
    mem_pct_sum  double precision NOT NULL,  -- sum of mem_used / mem_total x 100
    temp_max     real NOT NULL,
    power_sum    double precision NOT NULL,
    PRIMARY KEY (machine_id, bucket)
);
CREATE INDEX gpu_metrics_1m_bucket_idx ON gpu_metrics_1m (bucket);

CREATE TABLE gpu_metrics_1h (LIKE gpu_metrics_1m INCLUDING ALL);

-- How far the rollups are complete: data at or after `upto` is read from the finer level.
CREATE TABLE telemetry_rollup_state (
    level text PRIMARY KEY CHECK (level IN ('1m', '1h')),
    upto  timestamptz NOT NULL
);
INSERT INTO telemetry_rollup_state (level, upto) VALUES ('1m', '-infinity'), ('1h', '-infinity');

-- Create the partition of `parent` for one UTC day, moving any rows of that day out of
-- the DEFAULT partition first (attaching would fail otherwise).
CREATE FUNCTION telemetry_ensure_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE time >= %L AND time < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    RETURN true;
END;
$$;

-- Drop the day partitions of `parent` entirely before `before` (and such rows in DEFAULT).
CREATE FUNCTION telemetry_drop_partitions(parent text, before date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    child text;
    dropped integer := 0;
BEGIN
    FOR child IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < before
    LOOP
        EXECUTE format('DROP TABLE %I', child);
        dropped := dropped + 1;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE time < %L', parent || '_default',
                   before::timestamp AT TIME ZONE 'UTC');
    RETURN dropped;
END;
$$;

SELECT telemetry_ensure_partition(p, d::date)
FROM unnest(ARRAY['gpu_metrics', 'machine_metrics']) AS p,
     generate_series((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 2,
                     interval '1 day') AS d;
