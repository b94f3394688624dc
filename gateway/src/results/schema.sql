-- Attendance results: a materialized view of the durable log (DESIGN.md,
-- contract 8). One schema for SQLite (the embedded default) and
-- PostgreSQL: only types and statements both accept. Everything here can
-- be dropped and rebuilt with `fencegate results rebuild`.

-- The materializer's position in the log, committed with the rows it
-- produced (key 'next_lsn'), and per tenant and group the last day number
-- closed (key 'closed:<tenant>:<group>').
CREATE TABLE IF NOT EXISTS results_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Every punch record of the log, as day results need it.
CREATE TABLE IF NOT EXISTS punches (
    record_id TEXT PRIMARY KEY,
    lsn BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    employee TEXT NOT NULL,
    kind TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    verdict TEXT NOT NULL,
    status TEXT NOT NULL,
    needs_approval BIGINT NOT NULL,
    decision BIGINT,
    flags BIGINT NOT NULL,
    department TEXT,
    slot TEXT
);
CREATE INDEX IF NOT EXISTS punches_by_employee ON punches (tenant, employee, at_ms);

-- One row per employee, day and slot, and one for the whole day (slot '').
CREATE TABLE IF NOT EXISTS day_results (
    tenant TEXT NOT NULL,
    employee TEXT NOT NULL,
    date TEXT NOT NULL,
    slot TEXT NOT NULL,
    department TEXT,
    grp TEXT NOT NULL,
    status TEXT NOT NULL,
    late_min BIGINT NOT NULL,
    early_min BIGINT NOT NULL,
    worked_min BIGINT NOT NULL,
    overtime_min BIGINT NOT NULL,
    in_ms BIGINT,
    out_ms BIGINT,
    closed BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (tenant, employee, date, slot)
);
CREATE INDEX IF NOT EXISTS day_results_by_date ON day_results (tenant, date, department);
