-- Blame this node recorded against another: one row per culprit of a failed attempt, as its
-- own check saw it (reporter = this node) or as a participant reported it, typed (reporter =
-- that participant). `released_at` is set when an operator releases the accused node; until
-- then its incidents count toward keeping it out of signer sets.
CREATE TABLE incidents (
    id TEXT NOT NULL PRIMARY KEY,
    accused BIGINT NOT NULL,
    reporter BIGINT NOT NULL,
    kind TEXT NOT NULL,
    session TEXT NOT NULL,
    wallet_id TEXT,
    at BIGINT NOT NULL,
    detail TEXT NOT NULL,
    evidence BYTEA,
    released_at BIGINT
);
CREATE INDEX incidents_accused ON incidents (accused, released_at);
CREATE INDEX incidents_at ON incidents (at);
