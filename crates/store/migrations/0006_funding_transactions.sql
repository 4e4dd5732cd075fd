-- The transactions that created registered outputs, by txid (consensus encoding, hex). A PSBT
-- spending a P2WPKH output carries its funding transaction (`non_witness_utxo`), so that every
-- signer can check the amount against the txid instead of taking it on trust.
CREATE TABLE funding_transactions (
    txid TEXT NOT NULL PRIMARY KEY,
    raw_transaction TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
