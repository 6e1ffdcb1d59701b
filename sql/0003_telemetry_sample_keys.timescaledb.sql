-- Each sample is stored once (see the plain variant). TimescaleDB checks the keys in
-- compressed chunks too (it decompresses the segments a new row could collide with), so
-- late samples and absorbed retries stay unique there.
--
-- Copies stored twice before this migration are removed from the uncompressed chunks;
-- building the key does not look into compressed ones, which are older than a day.

DO $$
DECLARE
    chunk regclass;
BEGIN
    FOR chunk IN
        SELECT format('%I.%I', chunk_schema, chunk_name)::regclass
        FROM timescaledb_information.chunks
        WHERE hypertable_name = 'gpu_metrics' AND NOT is_compressed
    LOOP
        EXECUTE format('DELETE FROM %s a USING %s b WHERE a.machine_id = b.machine_id '
                       'AND a.time = b.time AND a.gpu_index = b.gpu_index AND a.ctid > b.ctid',
                       chunk, chunk);
    END LOOP;
    FOR chunk IN
        SELECT format('%I.%I', chunk_schema, chunk_name)::regclass
        FROM timescaledb_information.chunks
        WHERE hypertable_name = 'machine_metrics' AND NOT is_compressed
    LOOP
        EXECUTE format('DELETE FROM %s a USING %s b WHERE a.machine_id = b.machine_id '
                       'AND a.time = b.time AND a.ctid > b.ctid', chunk, chunk);
    END LOOP;
END;
$$;

DROP INDEX gpu_metrics_machine_time_idx;
CREATE UNIQUE INDEX gpu_metrics_sample_key ON gpu_metrics (machine_id, time DESC, gpu_index);
DROP INDEX machine_metrics_machine_time_idx;
CREATE UNIQUE INDEX machine_metrics_sample_key ON machine_metrics (machine_id, time DESC);
