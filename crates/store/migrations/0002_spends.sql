-- Value each wallet sent, as recorded by this node when it signed: the policy's rolling
-- 24-hour limit sums it.
CREATE TABLE spends (
    session TEXT NOT NULL,
    wallet_id TEXT NOT NULL REFERENCES wallets(id),
    amount_sats BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (session, wallet_id)
);
CREATE INDEX spends_wallet_at ON spends (wallet_id, at);
