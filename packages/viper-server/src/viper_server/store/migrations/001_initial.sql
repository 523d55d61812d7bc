-- The first schema: VMs, IP leases and the event log.
-- The seed's columns (id, name, status, pid, ip_address, cpu_cores, memory_mb, kernel_cmdline,
-- timestamps) plus what the Python server keeps to supervise and adopt a VM.

CREATE TABLE vms (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    pid             INTEGER,
    ip_address      TEXT,
    mac             TEXT,
    cpu_cores       INTEGER NOT NULL,
    memory_mb       INTEGER NOT NULL,
    kernel_cmdline  TEXT,
    runtime         TEXT NOT NULL,
    labels          TEXT NOT NULL DEFAULT '{}',
    ttl_seconds     INTEGER,
    idle_timeout_seconds REAL,
    expires_at      TEXT,
    command         TEXT,
    agent_url       TEXT,
    run_dir         TEXT,
    log_path        TEXT,
    api_socket      TEXT,
    exit_code       INTEGER,
    message         TEXT,
    devtools        TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    started_at      TEXT,
    stopped_at      TEXT,
    deleted_at      TEXT
);

-- A name belongs to at most one VM that has not been deleted; deleted rows stay as history.
CREATE UNIQUE INDEX vms_live_name ON vms (name) WHERE deleted_at IS NULL;
CREATE INDEX vms_status ON vms (status);

CREATE TABLE ip_allocations (
    ip_address  TEXT PRIMARY KEY,
    status      TEXT NOT NULL DEFAULT 'leased',
    vm_id       TEXT NOT NULL,
    leased_at   TEXT NOT NULL
);

CREATE INDEX ip_allocations_vm ON ip_allocations (vm_id);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    type        TEXT NOT NULL,
    vm          TEXT NOT NULL,
    status      TEXT,
    message     TEXT NOT NULL DEFAULT '',
    timestamp   TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}'
);
