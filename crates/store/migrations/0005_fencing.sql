-- Fencing tokens (issue 6): per resource (e.g. `ceremony/<node set>`, `wallet/<id>`,
-- `pool-refill`), the highest token of a cluster lock or leadership under which this node has
-- accepted an action. A lower token comes from a holder whose lock was lost and is refused;
-- equal tokens are accepted again (one holder acting several times). Times in unix
-- milliseconds. Portable: TEXT and BIGINT.
CREATE TABLE fencing_tokens (
    resource TEXT NOT NULL PRIMARY KEY,
    token BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
