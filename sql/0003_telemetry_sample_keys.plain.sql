-- Each sample is stored once. A batch retried after an unknown outcome (a COPY that timed
-- out on the hub's side while PostgreSQL went on to commit it), or a frame an agent sends
-- twice, must not add rows: the unique keys make a second copy fail, and the hub's writer
-- then absorbs that batch with ON CONFLICT DO NOTHING. They replace the (machine_id, time)
-- indexes, whose queries they serve as well.
--
-- Only that retry could store a sample twice before this migration; such copies are
-- removed first (the key could not be built over them).

DELETE FROM gpu_metrics a USING gpu_metrics b
WHERE a.tableoid = b.tableoid AND a.machine_id = b.machine_id AND a.time = b.time
  AND a.gpu_index = b.gpu_index AND a.ctid > b.ctid;
DELETE FROM machine_metrics a USING machine_metrics b
WHERE a.tableoid = b.tableoid AND a.machine_id = b.machine_id AND a.time = b.time
  AND a.ctid > b.ctid;

DROP INDEX gpu_metrics_machine_time_idx;
CREATE UNIQUE INDEX gpu_metrics_sample_key ON gpu_metrics (machine_id, time DESC, gpu_index);
DROP INDEX machine_metrics_machine_time_idx;
CREATE UNIQUE INDEX machine_metrics_sample_key ON machine_metrics (machine_id, time DESC);
