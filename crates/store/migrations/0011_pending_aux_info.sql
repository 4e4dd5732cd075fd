-- Aux info in two phases (issue 18): a participant's aux info waits in pending_aux_info until
-- the ceremony's coordinator commits it (then it moves to aux_info in one transaction) or
-- aborts it (then it is deleted and its safe primes go back to the pool, in one transaction).
-- So a failed ceremony leaves no node with aux info, and a retry is not refused.
CREATE TABLE pending_aux_info (
    node_set TEXT NOT NULL PRIMARY KEY,
    session TEXT NOT NULL,
    coordinator BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    public_digest TEXT NOT NULL,
    primes BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
