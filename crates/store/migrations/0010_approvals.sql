-- Signing requests waiting for human approvals (`[policy.approvals]`), and each approver's
-- signed decision. A request is decided by the node that holds it; every signer checks the
-- approvals again itself when the request is signed. `wallet_ids` is a JSON array.
CREATE TABLE approval_requests (
    id TEXT NOT NULL PRIMARY KEY,
    wallet_ids TEXT NOT NULL,
    psbt TEXT NOT NULL,
    txid TEXT NOT NULL,
    state TEXT NOT NULL,
    required BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    result TEXT,
    error TEXT,
    finished_at BIGINT
);
CREATE INDEX approval_requests_state ON approval_requests (state, created_at);
-- One decision per approver (public key, hex) and request.
CREATE TABLE approval_decisions (
    request_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    approver TEXT NOT NULL,
    decision TEXT NOT NULL,
    signature TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (request_id, public_key)
);
