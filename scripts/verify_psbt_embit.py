#!/usr/bin/env python3
"""Independent check of a signed PSBT with embit (a separate Python Bitcoin library).

Reads the JSON that `mpc-wallet demo --json` prints (or any JSON with
transaction.signed_psbt and transaction.raw_transaction) and, for every input, recomputes the
sighash with embit (BIP-143 for P2WPKH, BIP-341 for P2TR), verifies the witness signature
against the spent script's key, and checks that the PSBT's final transaction is the raw one.
Exits non-zero on any failure.
"""
import json
import sys

from embit import ec
from embit.psbt import PSBT
from embit.script import p2pkh
from embit.transaction import SIGHASH, Transaction


def main() -> int:
    report = json.load(open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin)
    tx_report = report.get("transaction", report)
    psbt = PSBT.from_string(tx_report["signed_psbt"])
    tx = psbt.tx
    spent = [inp.witness_utxo for inp in psbt.inputs]
    if any(u is None for u in spent):
        print("an input has no witness_utxo", file=sys.stderr)
        return 1
    for i, inp in enumerate(psbt.inputs):
        witness = inp.final_scriptwitness
        if witness is None:
            print(f"input {i}: not finalized", file=sys.stderr)
            return 1
        items = witness.items
        spk = spent[i].script_pubkey
        data = spk.data
        if data[0] == 0x00 and len(data) == 22:  # P2WPKH
            sig_der, pub = items[0][:-1], items[1]
            sighash_type = items[0][-1]
            key = ec.PublicKey.parse(pub)
            script_code = p2pkh(key)
            h = tx.sighash_segwit(i, script_code, spent[i].value, sighash=sighash_type)
            sig = ec.Signature.parse(sig_der)
            ok = key.verify(sig, h)
            kind = "p2wpkh"
        elif data[0] == 0x51 and len(data) == 34:  # P2TR key path
            raw = items[0]
            sighash_type = raw[64] if len(raw) == 65 else SIGHASH.DEFAULT
            h = tx.sighash_taproot(
                i,
                script_pubkeys=[u.script_pubkey for u in spent],
                values=[u.value for u in spent],
                sighash=sighash_type,
            )
            key = ec.PublicKey.from_xonly(data[2:])
            ok = key.schnorr_verify(ec.SchnorrSig.parse(raw[:64]), h)
            kind = "p2tr"
        else:
            print(f"input {i}: unexpected script {data.hex()}", file=sys.stderr)
            return 1
        print(f"input {i} {kind}: sighash {h.hex()} signature {'valid' if ok else 'INVALID'}")
        if not ok:
            return 1
    final = Transaction.parse(tx.serialize())
    for i, inp in enumerate(psbt.inputs):
        final.vin[i].witness = inp.final_scriptwitness
    if final.serialize().hex() != tx_report["raw_transaction"]:
        print("the PSBT's final transaction differs from raw_transaction", file=sys.stderr)
        return 1
    print("embit: every signature verifies; the PSBT finalizes to the raw transaction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
