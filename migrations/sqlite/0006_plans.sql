-- Typed plans: a step moves through its phase's stages one by one, each
-- recorded with its result in step_stages; `failure` holds the reason of a
-- step that failed while its cleanups run. Steps of the earlier shape
-- (start, await, finish) are put at the same point of their plan.
ALTER TABLE steps ADD COLUMN failure TEXT;

CREATE TABLE step_stages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    step_id INTEGER NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    cleanup TEXT,
    result TEXT NOT NULL,
    message TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX step_stages_step ON step_stages (step_id, id);

UPDATE steps SET failure = COALESCE(json_extract(outcome, '$.message'), 'the agent reported a failure')
    WHERE stage = 'finish' AND outcome IS NOT NULL AND json_extract(outcome, '$.ok') = 0;
UPDATE steps SET stage = CASE
    WHEN stage = 'start' AND phase = 'verify' THEN 'read_power'
    WHEN stage = 'start' AND phase = 'clean' THEN 'apply_bios'
    WHEN stage = 'start' AND phase = 'configure' THEN 'apply_role'
    WHEN stage = 'start' THEN 'netboot'
    WHEN stage = 'await' THEN 'await_agent'
    WHEN stage = 'finish' AND failure IS NOT NULL THEN 'await_agent'
    WHEN stage = 'finish' AND phase = 'inspect' THEN 'power_off'
    WHEN stage = 'finish' AND phase = 'clean' THEN 'verify_settings'
    WHEN stage = 'finish' AND phase = 'deploy' THEN 'set_boot_disk'
    WHEN stage = 'finish' AND phase = 'verify' THEN 'read_power'
    WHEN stage = 'finish' AND phase = 'configure' THEN 'apply_role'
    ELSE stage END;
