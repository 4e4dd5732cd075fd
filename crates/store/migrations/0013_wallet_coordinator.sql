-- The node that coordinated a wallet's keygen: the one that decides a pending wallet. A node
-- that restarts with a wallet still pending asks it (ARCHITECTURE.md, "Two-phase ceremonies").
-- NULL for wallets stored before this column existed.
ALTER TABLE wallets ADD COLUMN coordinator BIGINT NULL;
