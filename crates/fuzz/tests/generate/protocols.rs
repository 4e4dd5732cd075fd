//! Seeds of every protocol round (recorded from real runs) and of the control messages.

use super::*;

pub(super) fn protocol_and_control_seeds() {
    let aux = mpc_testkit::aux_info(3);
    // ECDSA key generation, 2-of-3.
    let all = [PartyIndex::new(0), PartyIndex::new(1), PartyIndex::new(2)];
    let keygen_eid = eid(ProtocolKind::EcdsaKeygen, &all, &[2]);
    let (incomplete, msgs) = record(3, |i, party| {
        let eid = keygen_eid;
        async move { ecdsa::keygen(&eid, i, 3, 2, party, &mut OsRng).await }
    });
    write_rounds("ecdsa_keygen_msg", "keygen", &msgs);
    let shares: Vec<ecdsa::EcdsaKeyShare> = incomplete
        .into_iter()
        .zip(aux.iter().cloned())
        .map(|(s, a)| ecdsa::EcdsaKeyShare::from_parts(s.expect("keygen"), a).expect("share"))
        .collect();
    // Presignatures and interactive signing: the same message type.
    let signers = [PartyIndex::new(0), PartyIndex::new(2)];
    let path: DerivationPath = "m/0/3".parse().expect("path");
    let presign_eid = eid(ProtocolKind::EcdsaPresign, &signers, &path.to_bytes());
    let (presignatures, msgs) = record(2, |j, party| {
        let (eid, share, path) = (
            presign_eid,
            &shares[signers[j.as_usize()].as_usize()],
            &path,
        );
        async move { ecdsa::presign(&eid, share, &signers, path, party, &mut OsRng).await }
    });
    write_rounds("ecdsa_signing_msg", "presign", &msgs);
    let message = SighashPreimage::new(b"fuzz: a preimage".to_vec());
    let sign_eid = eid(ProtocolKind::EcdsaSign, &signers, &message.sighash());
    let (signatures, msgs) = record(2, |j, party| {
        let (eid, share, path, message) = (
            sign_eid,
            &shares[signers[j.as_usize()].as_usize()],
            &path,
            &message,
        );
        async move { ecdsa::sign(&eid, share, &signers, path, message, party, &mut OsRng).await }
    });
    // Only the rounds presigning has not already given.
    let presign_rounds: Vec<u16> = std::fs::read_dir(corpus("ecdsa_signing_msg"))
        .expect("corpus")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("seed-presign-round")?
                .split('-')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let msgs: Vec<_> = msgs
        .into_iter()
        .filter(|(r, _)| !presign_rounds.contains(r))
        .collect();
    write_rounds("ecdsa_signing_msg", "sign", &msgs);
    let signature = first(signatures, "signature");
    let presignature = first(presignatures, "presign");
    let public = presignature.public().clone();
    let partial = presignature
        .issue_partial_signature(&shares[0], &path, &signers, &message)
        .expect("partial");

    // FROST key generation 2-of-3 and one signing.
    let frost_eid = eid(ProtocolKind::SchnorrKeygen, &all, &[2]);
    let (frost, msgs) = record(3, |i, party| {
        let eid = frost_eid;
        async move { schnorr::keygen(&eid, i, 3, 2, party, &mut OsRng).await }
    });
    write_rounds("frost_keygen_msg", "keygen", &msgs);
    let frost: Vec<_> = frost
        .into_iter()
        .map(|s| s.expect("frost keygen"))
        .collect();
    let sighash = [0x42; 32];
    let (frost_shares, msgs) = record(2, |j, party| {
        let (share, path) = (&frost[signers[j.as_usize()].as_usize()], &path);
        async move { schnorr::sign_share(share, &signers, path, &sighash, party, &mut OsRng).await }
    });
    write_rounds("frost_signing_msg", "sign", &msgs);
    let frost_share = first(frost_shares, "share");
    // Key refresh of the FROST key (the message type is the same for ECDSA).
    let refresh_eid = eid(ProtocolKind::KeyRefresh, &all, &[2]);
    let (_, msgs) = record(3, |i, party| {
        let (eid, share) = (refresh_eid, &frost[i.as_usize()]);
        async move { refresh::refresh_schnorr(&eid, share, party, &mut OsRng).await }
    });
    write_rounds("refresh_msg", "refresh", &msgs);
    // Resharing of the FROST key: node 3 replaced by node 4, nodes 1 and 2 dealing (the
    // message type is the same for ECDSA).
    let (plan, _) =
        reshare::Plan::for_committees(&[1, 2, 3], &[1, 2], &[1, 2, 4], 2).expect("resharing plan");
    let reshare_eid = eid(ProtocolKind::KeyReshare, &all, &plan.to_bytes());
    let old_info = frost[0].key_info();
    let (plan, old_info) = (&plan, &old_info);
    let (_, msgs) = record(3, |r, party| {
        let eid = reshare_eid;
        let old_share = plan.roles()[r.as_usize()]
            .dealer
            .map(|i| &frost[i.as_usize()]);
        async move {
            reshare::reshare_schnorr(&eid, plan, r.get(), old_info, old_share, party, &mut OsRng)
                .await
        }
    });
    write_rounds("reshare_msg", "reshare", &msgs);

    // Control messages, one of each kind.
    let session = Uuid::from_bytes([3; 16]);
    let wallet = WalletSpec {
        id: mpc_types::WalletId::must("w1"),
        name: "treasury".into(),
        scheme: mpc_bitcoin::Scheme::Schnorr,
        threshold: 2,
        participants: NodeId::must_list(&[1, 2, 3]),
        network: mpc_bitcoin::Network::Regtest,
    };
    let propose = |body| {
        Control::Propose(Proposal {
            session,
            body,
            fencing_token: Some(7),
        })
    };
    let psbt_b64 = {
        let bytes = std::fs::read(corpus("psbt").join("seed-mixed")).expect("psbt seed");
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    };
    let controls = [
        (
            "heartbeat",
            Control::Heartbeat {
                version: "0.1.0".into(),
                sent_at_ms: 1_700_000_000_000,
                audit_head: Some(mpc_store::AuditHead {
                    seq: 7,
                    hash: mpc_store::AuditHash([7; 32]),
                }),
                audit_question: Some(5),
                audit_answer: Some(mpc_node::audit_heads::AuditAnswer {
                    seq: 4,
                    hash: Some(mpc_store::AuditHash([4; 32])),
                }),
                primes_ready: Some(true),
            },
        ),
        (
            "aux-info",
            propose(ProposalBody::AuxInfo {
                node_set: NodeId::must_list(&[1, 2, 3]),
            }),
        ),
        ("keygen", propose(ProposalBody::Keygen { wallet })),
        (
            "presign",
            propose(ProposalBody::Presign {
                wallet_id: mpc_types::WalletId::must("w1"),
                path: path.clone(),
                signers: NodeId::must_list(&[1, 3]),
                count: 20,
            }),
        ),
        (
            "sign",
            propose(ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![
                    mpc_types::WalletId::must("w1"),
                    mpc_types::WalletId::must("w2"),
                ],
                psbt: psbt_b64.clone(),
                signers: NodeId::must_list(&[1, 3]),
                presignatures: vec![Some("p1".into()), None, None],
                approvals: None,
            }),
        ),
        (
            "outcome-sign",
            Control::Outcome {
                session,
                result: Ok(Outcome::Sign {
                    inputs: vec![
                        InputOutcome::Partial { partial, public },
                        InputOutcome::Ecdsa(signature),
                        InputOutcome::FrostShare(frost_share),
                    ],
                }),
            },
        ),
        (
            "outcome-keygen",
            Control::Outcome {
                session,
                result: Ok(Outcome::Keygen {
                    public_key: frost[0].public_key(),
                    chain_code: "00".repeat(32),
                }),
            },
        ),
        (
            "outcome-refused",
            Control::Outcome {
                session,
                result: Err(Refusal {
                    kind: RefusalKind::Inputs {
                        inputs: vec![InputRefusal {
                            input: 0,
                            code: "not_ours".into(),
                            reason: "no derivation".into(),
                        }],
                    },
                    message: "refused".into(),
                    evidence: None,
                }),
            },
        ),
        ("commit", Control::Commit { session }),
        (
            "abort",
            Control::Abort {
                session,
                reason: "timeout".into(),
            },
        ),
        (
            "signed",
            Control::Signed {
                wallet_ids: vec![mpc_types::WalletId::must("w1")],
                psbt: psbt_b64,
                raw_transaction: "0200000000".into(),
            },
        ),
    ];
    for (name, control) in controls {
        let envelope = control
            .envelope(session, NodeId::must(2), NodeId::must(1))
            .expect("control");
        seed("control", name, &envelope.payload);
    }

    // Aux info last: the slowest, and its messages are the largest.
    let primes = mpc_testkit::primes();
    let aux_eid = eid(ProtocolKind::AuxInfo, &PartyIndex::list(&[0, 1]), &[]);
    let primes = Mutex::new(primes.into_iter().map(Some).collect::<Vec<_>>());
    let (results, msgs) = record(2, |i, party| {
        let mine = primes.lock().expect("primes")[i.as_usize()]
            .take()
            .expect("primes");
        let eid = aux_eid;
        async move { ecdsa::generate_aux_info(&eid, i, 2, mine, party, &mut OsRng).await }
    });
    for r in results {
        r.expect("aux info");
    }
    // Two rounds' messages are about 200 kB each (the Paillier proofs): one of each round.
    write_rounds("aux_info_msg", "aux", &msgs);
}
