-- Attendance results: a materialized view of the durable log (DESIGN.md,
-- contract 8). One schema for SQLite (the embedded default) and
-- PostgreSQL: only types and statements both accept. Everything here can
-- be dropped and rebuilt with `fencegate results rebuild`.

-- The materializer's position, committed with the rows it produced: in
-- the node's log (key 'next_lsn'), or in the JetStream stream every node
-- forwards to (key 'stream_seq', the last stream sequence applied); and per tenant and group the last day number
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
    slot TEXT,
    -- 1 for a make-up punch (an approved correction, record_id
    -- 'makeup:<correction id>'), NULL for a device's punch.
    makeup BIGINT
);
-- Covering: a chunk of a day's close reads its employees' punches from
-- the index alone, without a lookup in the table per punch (400,000 of
-- them for a day closed at 100,000 employees).
CREATE INDEX IF NOT EXISTS punches_by_employee ON punches (tenant, employee, at_ms, kind, verdict, status, needs_approval, decision, record_id);

-- One row per employee, day and slot, and one for the whole day (slot '').
-- Keyed date first, and on SQLite stored in its key's order (WITHOUT
-- ROWID: the store turns the marker comment into that clause on SQLite,
-- and PostgreSQL, whose tables are heaps, reads past it). A day's rows lie
-- together, so closing a day for a roster
-- rewrites a few thousand pages instead of one per employee (at 100,000
-- employees, 400 MB of pages through the WAL and back). An employee's days
-- are found through `day_results_by_employee`.
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
    PRIMARY KEY (tenant, date, employee, slot)
) /* sqlite: WITHOUT ROWID */;
CREATE INDEX IF NOT EXISTS day_results_by_employee ON day_results (tenant, employee, date);
-- A date's rows are found by the primary key (date first): the close's
-- roster of a due day (`employees_between`) reads them from the table.
-- Version 7 stores had a covering index for that read; building it was a
-- seventh of a rebuild's time (docs/PERFORMANCE.md, "Fewer indexes"), and
-- the close reads a date's rows together either way.
DROP INDEX IF EXISTS day_results_by_date;
-- A department's days (a supervisor's month summary): without it a
-- department's month reads every department's rows of the month. It
-- covers every column the summary's `GROUP BY` reads, so a department's
-- month is read from the index (its rows of the month lie together there)
-- and never from the table, where they are spread over a page each.
CREATE INDEX IF NOT EXISTS day_results_by_department ON day_results (tenant, department, date, employee, slot, status, late_min, early_min, overtime_min, in_ms, out_ms);

-- The dashboard's aggregates (docs/DASHBOARD.md, "How the numbers are
-- kept"): written in the same transaction as the rows they count, by
-- adding the difference between a row's old and new values, so a chart
-- reads a few rows per date and department instead of one per employee
-- day. `department` is '' for employees without one. Only day rows
-- (slot '') count.
CREATE TABLE IF NOT EXISTS day_stats (
    tenant TEXT NOT NULL,
    date TEXT NOT NULL,
    department TEXT NOT NULL,
    day_rows BIGINT NOT NULL,
    expected BIGINT NOT NULL,
    attended BIGINT NOT NULL,
    late_days BIGINT NOT NULL,
    early_days BIGINT NOT NULL,
    missing BIGINT NOT NULL,
    field_days BIGINT NOT NULL,
    overtime_min BIGINT NOT NULL,
    PRIMARY KEY (tenant, date, department)
);

-- Employee days whose closed result was written and is not yet in the
-- durable log as a `DayResult` record (results/outbox.rs): the outbox the
-- publisher task empties. `seq` moves each time the day is noted again,
-- so a day rewritten while it was being sent stays noted.
CREATE TABLE IF NOT EXISTS day_outbox (
    tenant TEXT NOT NULL,
    date TEXT NOT NULL,
    employee TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (tenant, date, employee)
);

-- Per employee and month (`YYYY-MM`): what the top-10 lists and the
-- overtime table rank by, for any range of dates. Each of the five sums
-- is kept twice: for the whole month (`late_days` ... `overtime_min`), and
-- as running sums from the month's first day, `<sum>_to_DD` = the sum over
-- days 1 to DD, for DD = 01 to 30 (day 31's is the month's own). So the
-- days a to b of a month are `<sum>_to_b - <sum>_to_(a-1)`: one row per
-- employee and month for any part of a month, instead of a row per
-- employee day (docs/DASHBOARD.md, "How the numbers are kept"). The store
-- writes the 150 running-sum columns where the marker comment below stands
-- (`RUN_MARKER` in store.rs, from `MONTH_SUMS` and `RUN_DAYS`). Stored in
-- its key's order on SQLite (WITHOUT ROWID, as `day_results`): a month's
-- rows lie together, and an upsert finds its row in one B-tree.
CREATE TABLE IF NOT EXISTS employee_months (
    tenant TEXT NOT NULL,
    month TEXT NOT NULL,
    department TEXT NOT NULL,
    employee TEXT NOT NULL,
    late_days BIGINT NOT NULL,
    late_min BIGINT NOT NULL,
    early_days BIGINT NOT NULL,
    early_min BIGINT NOT NULL,
    overtime_min BIGINT NOT NULL,
    /* running sums */
    PRIMARY KEY (tenant, month, department, employee)
) /* sqlite: WITHOUT ROWID */;

-- Abnormal punches per UTC hour (`at_ms / 3600000`) and department, for
-- the causes pie. Punch rows never change their counted columns after the
-- insert, so only new punches with a cause add here. The hours at the edges
-- of a range that does not start on a whole hour are counted from
-- `punches` through `punches_by_time`.
CREATE TABLE IF NOT EXISTS punch_stats (
    tenant TEXT NOT NULL,
    hour BIGINT NOT NULL,
    department TEXT NOT NULL,
    late BIGINT NOT NULL,
    early BIGINT NOT NULL,
    out_of_range BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    anti_cheat BIGINT NOT NULL,
    PRIMARY KEY (tenant, hour, department)
);
CREATE INDEX IF NOT EXISTS punches_by_time ON punches (tenant, at_ms);

-- HR records (docs/ATTENDANCE.md, "HR records"): each is a record of the
-- log, folded in here by the materializer in log order.

-- Every HR record applied, by record id: an HR route that appended one
-- waits here until it is applied, whichever node's materializer applies it
-- (with `[cluster] results = "stream"` that is the stream's consumer).
CREATE TABLE IF NOT EXISTS hr_records (
    record_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

-- Decisions on punches waiting for approval (the first per record wins).
CREATE TABLE IF NOT EXISTS decisions (
    tenant TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    approve BIGINT NOT NULL,
    decider TEXT,
    role TEXT,
    comment TEXT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, decision_id)
);
CREATE INDEX IF NOT EXISTS decisions_by_record ON decisions (tenant, record_id);

-- Leave and business trips, whole days inclusive (dates in the tenant's zone).
CREATE TABLE IF NOT EXISTS leave_entries (
    tenant TEXT NOT NULL,
    source_id TEXT NOT NULL,
    employee TEXT NOT NULL,
    from_date TEXT NOT NULL,
    to_date TEXT NOT NULL,
    leave_type TEXT NOT NULL,
    entered_by TEXT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, source_id)
);
CREATE INDEX IF NOT EXISTS leave_by_employee ON leave_entries (tenant, employee, from_date);

-- Make-up punch requests and their decisions.
CREATE TABLE IF NOT EXISTS corrections (
    tenant TEXT NOT NULL,
    correction_id TEXT NOT NULL,
    employee TEXT NOT NULL,
    department TEXT,
    date TEXT NOT NULL,
    slot TEXT,
    kind TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    reason TEXT,
    evidence_ref TEXT,
    requested_by TEXT,
    requested_ms BIGINT NOT NULL,
    evidence_due_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    decision_id TEXT,
    decider TEXT,
    comment TEXT,
    decided_ms BIGINT,
    PRIMARY KEY (tenant, correction_id)
);
CREATE INDEX IF NOT EXISTS corrections_by_employee ON corrections (tenant, employee, date);

-- Archived months and their frozen per-employee summaries (JSON text).
CREATE TABLE IF NOT EXISTS month_archives (
    tenant TEXT NOT NULL,
    month TEXT NOT NULL,
    archived_ms BIGINT NOT NULL,
    archived_by TEXT,
    PRIMARY KEY (tenant, month)
);
CREATE TABLE IF NOT EXISTS month_snapshots (
    tenant TEXT NOT NULL,
    month TEXT NOT NULL,
    employee TEXT NOT NULL,
    department TEXT,
    summary TEXT NOT NULL,
    PRIMARY KEY (tenant, month, employee)
);

-- Evidence attached to a make-up request after it was filed (a
-- `CorrectionEvidence` record: at most one per request, and only before
-- the request's evidence_due_ms). No semicolons in comments here: the
-- store splits this file on them. The request's own evidence_ref stays in
-- `corrections`, so resending the original request still matches it.
CREATE TABLE IF NOT EXISTS correction_evidence (
    tenant TEXT NOT NULL,
    correction_id TEXT NOT NULL,
    evidence_ref TEXT NOT NULL,
    attached_by TEXT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, correction_id)
);
