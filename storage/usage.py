"""Usage of leased machines (CONTRACT.md §4c): lease time, GPU-hours and the GPU-hours
the measured utilisation fills, per machine, by one query over allocations and rollups."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from storage.db import Executor

# held: per machine, the union of the tenant's leases clipped to [since, until); a lease
# runs from start_time to the earliest of closed_at, expires_at (time after expiry waiting
# for the reclaim is not the tenant's) and until (never beyond now). LEAST ignores NULLs.
# A union, so a back-dated lease overlapping another of the same tenant counts once.
#
# measured: each hour's GPU samples of those machines as sums and counts, read like the
# trend (storage/telemetry.py): the 1 h rollup before rolled_1h, the 1 m rollup up to
# rolled_1m, raw rows after (plain PostgreSQL: not rolled up yet; with TimescaleDB both
# watermarks are +infinity and the real-time aggregate covers everything).
#
# busy: per hour, the mean utilisation of the machine's GPUs (util_sum / samples, every
# sample weighing the same) times the part of that hour that is held. Times the machine's
# GPU count, that is the sum over its GPUs of mean util x held time. Hours without samples
# add nothing; a machine with none at all while held has busy NULL (unknown, not 0).
#
# A machine deleted since (the lease outlives it) has no GPU count: its GPU-hours are NULL.
#   $1 tenant  $2 since  $3 until  $4 since rounded down to the hour  $5 rolled_1h
#   $6 rolled_1m
_USAGE = """
WITH held AS (
    SELECT a.machine_id,
           range_agg(tstzrange(greatest(a.start_time, $2),
                               least(a.closed_at, a.expires_at, $3))) AS spans
    FROM allocations a
    WHERE a.tenant_id = $1
      AND greatest(a.start_time, $2) < least(a.closed_at, a.expires_at, $3)
    GROUP BY a.machine_id
),
measured AS (
    SELECT machine_id, bucket AS hour, util_sum, samples FROM gpu_metrics_1h
    WHERE machine_id IN (SELECT machine_id FROM held)
      AND bucket >= $4 AND bucket < $3 AND bucket < $5
    UNION ALL
    SELECT machine_id, date_trunc('hour', bucket), util_sum, samples FROM gpu_metrics_1m
    WHERE machine_id IN (SELECT machine_id FROM held)
      AND bucket >= $4 AND bucket >= $5 AND bucket < $3 AND bucket < $6
    UNION ALL
    SELECT machine_id, date_trunc('hour', time), util, 1 FROM gpu_metrics
    WHERE machine_id IN (SELECT machine_id FROM held)
      AND time >= $4 AND time >= $6 AND time < $3
),
hourly AS (
    SELECT machine_id, hour, sum(util_sum) / sum(samples) / 100 AS busy_share
    FROM measured
    GROUP BY machine_id, hour
),
busy AS (
    SELECT h.machine_id,
           sum(h.busy_share * extract(epoch FROM upper(part) - lower(part))::float8)
               / 3600 AS hours
    FROM hourly h
    JOIN held USING (machine_id)
    CROSS JOIN LATERAL unnest(
        held.spans * tstzmultirange(tstzrange(h.hour, h.hour + interval '1 hour'))) AS part
    GROUP BY h.machine_id
),
leased AS (
    SELECT held.machine_id,
           (SELECT sum(extract(epoch FROM upper(span) - lower(span)))
            FROM unnest(held.spans) AS span)::float8 / 3600 AS hours
    FROM held
)
SELECT leased.machine_id,
       leased.hours AS leased_hours,
       leased.hours * m.gpu_count AS gpu_hours,
       busy.hours * m.gpu_count AS busy_gpu_hours
FROM leased
LEFT JOIN machines m ON m.id = leased.machine_id
LEFT JOIN busy USING (machine_id)
ORDER BY leased.machine_id
"""


async def of_tenant(db: Executor, tenant_id: int, *, since: datetime, until: datetime,
                    first_hour: datetime, rolled_1h: datetime,
                    rolled_1m: datetime) -> list[asyncpg.Record]:
    """One row per machine the tenant held in [since, until), by machine id; ``rolled_1h``
    and ``rolled_1m`` say up to when each rollup is complete."""
    return await db.fetch(_USAGE, tenant_id, since, until, first_hour, rolled_1h, rolled_1m)
