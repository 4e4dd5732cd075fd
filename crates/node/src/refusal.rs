//! A participant's refusal as it travels to the coordinator: a typed value, so the API answers
//! a signer's refusal with the same code and details as the coordinator's own (`policy_refused`
//! with its `rule`, `psbt_refused` with each input's code, ...), plus the node that refused.

use mpc_transport::NodeId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::NodeError;

/// Why a participant did not take part in a proposal, or failed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// The participant's own words (its error's text).
    pub message: String,
    /// With [`RefusalKind::PeerMisbehaved`]: the encoded evidence (the peer's signed
    /// message(s) and certificate, `mpc_transport::evidence`), so the coordinator need not
    /// take the participant's word for it. Absent on the wire when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Vec<u8>>,
}

/// The refusals the API tells apart. Each is the wire form of one kind of [`NodeError`]; the
/// API maps a local error through it too, so a remote refusal and a local one get one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// A rule of the participant's policy ([`mpc_bitcoin::policy::PolicyViolation::rule`]).
    Policy {
        rule: String,
    },
    /// The participant's approval rule (`[policy.approvals]`): `approvals_missing`,
    /// `approval_invalid` or `approval_expired`.
    Approval {
        rule: String,
    },
    /// Inputs the participant does not sign ([`mpc_bitcoin::InputProblem::code`] per input).
    Inputs {
        inputs: Vec<InputRefusal>,
    },
    /// A transaction no Bitcoin node would accept ([`mpc_bitcoin::TxProblem::code`]).
    InvalidTransaction {
        rule: String,
        input: Option<usize>,
        output: Option<usize>,
    },
    MalformedPsbt,
    /// One of the participant's `[limits]`.
    LimitExceeded {
        limit: String,
    },
    /// The proposal's fencing token is not the current holder's, as etcd shows it.
    FencingTokenRefused,
    /// The participant could not reach the cluster backend (etcd) to check the proposal.
    CoordinationUnavailable,
    /// The session id was used before: a replayed proposal.
    SessionReplayed {
        session: Uuid,
    },
    /// A presignature the proposal names is used, expired, of an old epoch, unknown, or bound
    /// to another wallet, path or signer set.
    PresignatureUnavailable {
        presignature: String,
    },
    NotFound,
    InvalidRequest,
    /// The participant's protocol run ended without messages from these nodes (in the latest
    /// round it reached): they are to blame, not the participant reporting it.
    PeersSilent {
        nodes: Vec<NodeId>,
    },
    /// A message from this node did not decode at the participant.
    PeerMisbehaved {
        node: NodeId,
    },
    /// The protocol library aborted the participant's run (a proof or commitment that did not
    /// check, a broadcast that was not reliable). The libraries keep the parties they blame in
    /// private types, so nobody is named: the coordinator tries another signer set.
    ProtocolAborted,
    /// Anything else: the participant's store, protocol run or transport failed.
    Failed,
}

/// One refused input, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRefusal {
    pub input: usize,
    pub code: String,
    pub reason: String,
}

impl Refusal {
    /// Whether the refusing participant blames other nodes (silent or malformed) for it.
    pub fn accuses(&self) -> bool {
        matches!(
            self.kind,
            RefusalKind::PeersSilent { .. } | RefusalKind::PeerMisbehaved { .. }
        )
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::Failed,
            message: message.into(),
            evidence: None,
        }
    }
}

impl From<&NodeError> for Refusal {
    fn from(error: &NodeError) -> Self {
        use mpc_bitcoin::WalletError;
        let kind = match error {
            NodeError::Policy(violation) => RefusalKind::Policy {
                rule: violation.rule.to_owned(),
            },
            NodeError::Approval(violation) => RefusalKind::Approval {
                rule: violation.rule.to_owned(),
            },
            NodeError::Wallet(WalletError::Inputs(inputs)) => RefusalKind::Inputs {
                inputs: inputs
                    .iter()
                    .map(|i| InputRefusal {
                        input: i.input,
                        code: i.problem.code().to_owned(),
                        reason: i.problem.to_string(),
                    })
                    .collect(),
            },
            NodeError::Wallet(WalletError::InvalidTransaction(problem)) => {
                RefusalKind::InvalidTransaction {
                    rule: problem.code().to_owned(),
                    input: problem.input(),
                    output: problem.output(),
                }
            }
            NodeError::Wallet(WalletError::MalformedPsbt(_)) => RefusalKind::MalformedPsbt,
            NodeError::LimitExceeded { limit, .. } => RefusalKind::LimitExceeded {
                limit: (*limit).to_owned(),
            },
            NodeError::FencingTokenRefused(_) => RefusalKind::FencingTokenRefused,
            NodeError::SessionReplayed(session) => {
                RefusalKind::SessionReplayed { session: *session }
            }
            NodeError::PresignatureUnavailable { presignature, .. } => {
                RefusalKind::PresignatureUnavailable {
                    presignature: presignature.clone(),
                }
            }
            NodeError::Coordination(_) => RefusalKind::CoordinationUnavailable,
            NodeError::NotFound(_) => RefusalKind::NotFound,
            NodeError::InvalidRequest(_) => RefusalKind::InvalidRequest,
            NodeError::Timeout { nodes, .. } => RefusalKind::PeersSilent {
                nodes: nodes.clone(),
            },
            NodeError::Misbehaved { node, .. } => RefusalKind::PeerMisbehaved { node: *node },
            NodeError::Protocol(_) => RefusalKind::ProtocolAborted,
            // A refusal this node relays (it was not the one refusing): its kind, unchanged.
            NodeError::Refused { refusal, .. } => refusal.kind.clone(),
            NodeError::Config(_)
            | NodeError::RequestClosed { .. }
            | NodeError::Store(_)
            | NodeError::Transport(_)
            | NodeError::Wallet(_)
            | NodeError::Unavailable(_)
            | NodeError::Disagreement(_)
            | NodeError::Internal(_) => RefusalKind::Failed,
        };
        let message = match error {
            NodeError::Refused { refusal, .. } => refusal.message.clone(),
            other => other.to_string(),
        };
        let evidence = match error {
            NodeError::Misbehaved { evidence, .. } => evidence.clone(),
            NodeError::Refused { refusal, .. } => refusal.evidence.clone(),
            _ => None,
        };
        Self {
            kind,
            message,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use mpc_bitcoin::{policy::PolicyViolation, InputError, InputProblem, TxProblem, WalletError};

    use super::*;
    use mpc_transport::NodeId;

    /// Every refusal kind survives the trip, encoded as the control channel encodes it.
    #[test]
    fn refusals_travel_typed() {
        let errors = [
            NodeError::Policy(PolicyViolation {
                rule: "max_amount_per_tx_sats",
                detail: "too much".into(),
            }),
            NodeError::Wallet(WalletError::Inputs(vec![InputError {
                input: 1,
                problem: InputProblem::SighashTypeRefused(0x83),
            }])),
            NodeError::Wallet(WalletError::InvalidTransaction(TxProblem::DuplicateInput {
                input: 1,
                first: 0,
            })),
            NodeError::Wallet(WalletError::MalformedPsbt("bad".into())),
            NodeError::Approval(mpc_bitcoin::approval::ApprovalViolation {
                rule: "approvals_missing",
                detail: "1 of 2 approvals".into(),
            }),
            NodeError::LimitExceeded {
                limit: "max_inputs_per_psbt",
                detail: "101 inputs".into(),
            },
            NodeError::SessionReplayed(Uuid::new_v4()),
            NodeError::PresignatureUnavailable {
                presignature: "p-1".into(),
                detail: "already used".into(),
            },
            NodeError::NotFound("wallet w".into()),
            NodeError::InvalidRequest("name 1 to 8 wallets".into()),
            NodeError::Coordination(mpc_coordination::CoordinationError::Config(
                "no endpoints".into(),
            )),
            NodeError::Internal("disk full".into()),
        ];
        let mut kinds = Vec::new();
        for error in &errors {
            let refusal = Refusal::from(error);
            assert_eq!(refusal.message, error.to_string());
            let wire = mpc_protocols::encoding::encode(&refusal).unwrap();
            let back: Refusal = mpc_protocols::encoding::decode(&wire).unwrap();
            assert_eq!(back, refusal);
            // A node relaying it keeps it as it was.
            let relayed = NodeError::Refused {
                node: NodeId::must(2),
                refusal: back,
            };
            assert_eq!(Refusal::from(&relayed), refusal);
            kinds.push(std::mem::discriminant(&refusal.kind));
        }
        kinds.dedup();
        assert_eq!(kinds.len(), errors.len(), "each error its own kind");
        assert_eq!(
            Refusal::from(&errors[0]).kind,
            RefusalKind::Policy {
                rule: "max_amount_per_tx_sats".into()
            }
        );
        assert_eq!(
            Refusal::from(&errors[1]).kind,
            RefusalKind::Inputs {
                inputs: vec![InputRefusal {
                    input: 1,
                    code: "sighash_type_refused".into(),
                    reason: InputProblem::SighashTypeRefused(0x83).to_string(),
                }]
            }
        );
    }
}
