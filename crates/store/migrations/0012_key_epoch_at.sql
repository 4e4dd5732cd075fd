-- Scheduled key refresh (issue 19): when each wallet's current key epoch began (its refresh
-- committed here). NULL: the wallet has not been refreshed since it became active.
ALTER TABLE wallets ADD COLUMN key_epoch_at BIGINT NULL;
