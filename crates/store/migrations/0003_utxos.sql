-- The UTXO registry: funding outputs registered for a wallet through this node's API, and the
-- change outputs of transactions this node built. `state` is `available`, `reserved` (a
-- transaction being signed spends it; `reserved_by` names the request) or `spent`
-- (`spent_by` is the txid). Amounts in satoshis, times in unix milliseconds.
CREATE TABLE utxos (
    outpoint TEXT NOT NULL PRIMARY KEY,
    wallet_id TEXT NOT NULL REFERENCES wallets (id),
    amount_sats BIGINT NOT NULL,
    path TEXT NOT NULL,
    script_pubkey TEXT NOT NULL,
    origin TEXT NOT NULL,
    state TEXT NOT NULL,
    reserved_by TEXT NULL,
    reserved_at BIGINT NULL,
    spent_by TEXT NULL,
    spent_at BIGINT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX utxos_wallet_state ON utxos (wallet_id, state);
CREATE INDEX utxos_reserved_by ON utxos (reserved_by);

-- Each wallet's next unused change index (m/1/i): allocated once, never handed out twice.
CREATE TABLE change_indices (
    wallet_id TEXT NOT NULL PRIMARY KEY REFERENCES wallets (id),
    next_index BIGINT NOT NULL
);
