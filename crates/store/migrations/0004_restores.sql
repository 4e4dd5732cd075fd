-- Restores from a backup (`mpc-wallet restore`), newest last. A restore starts a new
-- presignature epoch (`meta.epoch`, already checked by every presignature insert, listing and
-- consume): `epoch` is the epoch the restored store starts at, above both the backup's and
-- the replaced store's, and `presignatures_deleted` counts the rows the restore removed
-- (backups never hold presignatures). Times in unix milliseconds. Portable: TEXT and BIGINT.
CREATE TABLE restores (
    id TEXT NOT NULL PRIMARY KEY,
    backup_sha256 TEXT NOT NULL,
    backup_created_at BIGINT NOT NULL,
    backup_epoch BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    presignatures_deleted BIGINT NOT NULL,
    restored_at BIGINT NOT NULL
);
