-- One schema for SQLite and PostgreSQL: only TEXT, BIGINT and BYTEA columns, natural or uuid
-- keys, timestamps in unix milliseconds. Columns named `sealed` hold XChaCha20-Poly1305 blobs.

CREATE TABLE meta (
    key TEXT NOT NULL PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE primes (
    id TEXT NOT NULL PRIMARY KEY,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE aux_info (
    node_set TEXT NOT NULL PRIMARY KEY,
    sealed BYTEA NOT NULL,
    public_digest TEXT NOT NULL,
    session TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE wallets (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    scheme TEXT NOT NULL,
    threshold BIGINT NOT NULL,
    participants TEXT NOT NULL,
    network TEXT NOT NULL,
    public_key TEXT NOT NULL,
    chain_code TEXT NOT NULL,
    state TEXT NOT NULL,
    session TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    activated_at BIGINT NULL
);

CREATE TABLE key_shares (
    wallet_id TEXT NOT NULL PRIMARY KEY REFERENCES wallets (id),
    sealed BYTEA NOT NULL
);

CREATE TABLE ceremonies (
    id TEXT NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    coordinator BIGINT NOT NULL,
    request TEXT NOT NULL,
    result TEXT NULL,
    error TEXT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NULL
);
CREATE INDEX ceremonies_started ON ceremonies (started_at);

CREATE TABLE sessions_seen (
    session TEXT NOT NULL PRIMARY KEY,
    protocol TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);

CREATE TABLE presignatures (
    id TEXT NOT NULL PRIMARY KEY,
    wallet_id TEXT NOT NULL REFERENCES wallets (id),
    path TEXT NOT NULL,
    signers TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    state TEXT NOT NULL,
    sealed BYTEA NULL,
    public BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    consumed_at BIGINT NULL
);
CREATE INDEX presignatures_pool ON presignatures (wallet_id, path, signers, state);
