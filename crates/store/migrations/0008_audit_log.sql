-- The node's audit log: append-only, each row hash-chained to the one before (`audit.rs`).
-- Hashes are hex text, and details JSON text exactly as hashed (never re-encoded by the
-- database), so a row is checked from its columns alone on either backend.
CREATE TABLE audit_log (
    seq BIGINT NOT NULL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
