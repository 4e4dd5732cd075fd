-- Resharing (issue 19): a pending share may move the wallet to another committee or threshold.
-- NULL for a refresh (same committee and threshold). A pending row whose participants do not
-- include this node is a leaving dealer's: its commit deletes this node's share and marks the
-- wallet 'retired' here.
ALTER TABLE pending_key_shares ADD COLUMN participants TEXT NULL;
ALTER TABLE pending_key_shares ADD COLUMN threshold BIGINT NULL;
