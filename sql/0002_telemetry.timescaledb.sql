-- Telemetry with TimescaleDB (2.11+ for writes into compressed chunks, 2.9+ for
-- hierarchical continuous aggregates). Same tables and columns as the plain variant:
-- hypertables with 1-day chunks, compressed after 1 day, raw data kept 30 days, and
-- continuous aggregates for the rollups (1 m kept 30 days, 1 h kept a year).

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE gpu_metrics (
    time       timestamptz NOT NULL,
    machine_id text NOT NULL,
    gpu_index  smallint NOT NULL,
    util       real NOT NULL,  -- percent
    mem_used   real NOT NULL,  -- MiB
    mem_total  real NOT NULL,  -- MiB
    temp       real NOT NULL,  -- degrees C
    power      real NOT NULL   -- W
);
SELECT create_hypertable('gpu_metrics', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX gpu_metrics_machine_time_idx ON gpu_metrics (machine_id, time DESC);
ALTER TABLE gpu_metrics SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'machine_id, gpu_index',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('gpu_metrics', compress_after => INTERVAL '1 day');
SELECT add_retention_policy('gpu_metrics', drop_after => INTERVAL '30 days');

CREATE TABLE machine_metrics (
    time       timestamptz NOT NULL,
    machine_id text NOT NULL,
    cpu_util   real NOT NULL,  -- percent
    mem_used   real NOT NULL,  -- GB
    mem_total  real NOT NULL,  -- GB
    disk_used  real NOT NULL,  -- GB
    disk_total real NOT NULL   -- GB
);
SELECT create_hypertable('machine_metrics', 'time', chunk_time_interval => INTERVAL '1 day');
CREATE INDEX machine_metrics_machine_time_idx ON machine_metrics (machine_id, time DESC);
ALTER TABLE machine_metrics SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'machine_id',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('machine_metrics', compress_after => INTERVAL '1 day');
SELECT add_retention_policy('machine_metrics', drop_after => INTERVAL '30 days');

-- Rollups as sums and counts (see the plain variant); created WITH NO DATA because a
-- migration runs in a transaction. materialized_only = false: the still-open buckets are
-- computed from raw rows at query time (real-time aggregation is off by default since 2.13).
CREATE MATERIALIZED VIEW gpu_metrics_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       machine_id,
       count(*)::integer AS samples,
       sum(util::double precision) AS util_sum,
       max(util) AS util_max,
       sum(mem_used::double precision) AS mem_used_sum,
       sum(mem_used::double precision / nullif(mem_total, 0) * 100) AS mem_pct_sum,
       max(temp) AS temp_max,
       sum(power::double precision) AS power_sum
FROM gpu_metrics
GROUP BY time_bucket(INTERVAL '1 minute', time), machine_id
WITH NO DATA;

CREATE MATERIALIZED VIEW gpu_metrics_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       machine_id,
       sum(samples)::integer AS samples,
       sum(util_sum) AS util_sum,
       max(util_max) AS util_max,
       sum(mem_used_sum) AS mem_used_sum,
       sum(mem_pct_sum) AS mem_pct_sum,
       max(temp_max) AS temp_max,
       sum(power_sum) AS power_sum
FROM gpu_metrics_1m
GROUP BY time_bucket(INTERVAL '1 hour', bucket), machine_id
WITH NO DATA;

-- Refresh windows stay inside raw retention (30 days) and cover late frames (up to 24 h).
SELECT add_continuous_aggregate_policy('gpu_metrics_1m', start_offset => INTERVAL '2 days',
                                       end_offset => INTERVAL '1 minute',
                                       schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('gpu_metrics_1h', start_offset => INTERVAL '3 days',
                                       end_offset => INTERVAL '1 hour',
                                       schedule_interval => INTERVAL '15 minutes');
SELECT add_retention_policy('gpu_metrics_1m', drop_after => INTERVAL '30 days');
SELECT add_retention_policy('gpu_metrics_1h', drop_after => INTERVAL '365 days');
