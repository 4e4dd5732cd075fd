-- Key refresh (issue 19): each wallet's shares have a key epoch, bumped when a refresh
-- commits. A presignature is made for one key epoch and only signs under it. A refreshed
-- share waits in pending_key_shares until the refresh commits (then it replaces the active
-- one in the same transaction that bumps the epoch) or aborts (then it is deleted).
ALTER TABLE wallets ADD COLUMN key_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE presignatures ADD COLUMN key_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE pending_key_shares (
    wallet_id TEXT NOT NULL PRIMARY KEY REFERENCES wallets (id),
    key_epoch BIGINT NOT NULL,
    session TEXT NOT NULL,
    coordinator BIGINT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
