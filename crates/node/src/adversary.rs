//! A malicious node for tests (feature `test-support`, never in a release build): an
//! [`Interceptor`] on the in-memory mesh that alters what one node sends, envelope by envelope
//! and field by field, as a node run by a hostile operator could.
//!
//! [`Attack`] is one behaviour, aimed at the envelopes one [`Target`] selects (a protocol and
//! round, or one kind of control message); [`cases`] generates the matrix of attacks (envelope
//! mutations × rounds × payload fields) from what an honest run of the same ceremony sent.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use ciborium::Value;
use mpc_transport::{memory::Interceptor, Envelope, NodeId, CONTROL};

/// Which of the adversary's envelopes an attack alters; the others go out unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Messages of one protocol (its envelope code) in one round.
    Protocol { code: u8, round: u16 },
    /// Control messages of one kind (the serde tag, e.g. `"Outcome"`).
    Control { kind: String },
    /// Every message of one protocol, whatever its round: a node hostile for a whole run.
    EveryRound { code: u8 },
}

impl Target {
    fn selects(&self, envelope: &Envelope) -> bool {
        match self {
            Target::Protocol { code, round } => {
                envelope.protocol == *code && envelope.round == *round
            }
            Target::Control { kind } => {
                envelope.protocol == CONTROL
                    && control_kind(&envelope.payload) == Some(kind.clone())
            }
            Target::EveryRound { code } => envelope.protocol == *code,
        }
    }
}

/// The serde tag of a control message (`{"Outcome": {...}}` → `Outcome`).
fn control_kind(payload: &[u8]) -> Option<String> {
    match ciborium::from_reader::<Value, _>(payload).ok()? {
        Value::Map(entries) => entries
            .first()
            .and_then(|(k, _)| k.as_text().map(str::to_owned)),
        Value::Text(unit) => Some(unit),
        _ => None,
    }
}

/// One change to one field of a decoded payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldChange {
    /// One bit flipped in the middle of the value.
    FlipBit,
    /// Every byte zero (a zero scalar; the identity where points encode it so).
    Zero,
    /// The value as the single byte 0x00 (the identity point's usual encoding).
    Identity,
    /// secp256k1's generator, compressed: a valid point, the wrong one.
    Generator,
    /// 33 bytes that are no point on the curve (x = 5 has no square root for y).
    OffCurve,
    /// The low bit cleared at both ends (an even modulus, a small factor either way round).
    Even,
    /// One byte shorter.
    Truncate,
    /// One byte longer.
    Extend,
    /// The value swapped with the next field of the same kind (a proof for another one).
    SwapWithNext,
}

impl FieldChange {
    pub const ALL: [FieldChange; 9] = [
        FieldChange::FlipBit,
        FieldChange::Zero,
        FieldChange::Identity,
        FieldChange::Generator,
        FieldChange::OffCurve,
        FieldChange::Even,
        FieldChange::Truncate,
        FieldChange::Extend,
        FieldChange::SwapWithNext,
    ];
}

/// What the adversary does to the envelopes its [`Target`] selects.
#[derive(Debug, Clone)]
pub enum Attack {
    /// Never sent (withholding; in the last round, its last message).
    Drop,
    /// Sent twice.
    Duplicate,
    /// Sent late: after the ceremony's deadline when the delay is longer than it.
    Delay(Duration),
    /// Labelled with another round.
    WrongRound,
    /// The payload cut in half.
    TruncatePayload,
    /// Bytes appended to the payload.
    ExtendPayload,
    /// The envelope claims another node sent it.
    ClaimSender(NodeId),
    /// The first recipient gets a payload with one field flipped, the others the real one.
    Equivocate,
    /// The payload of the same round of another session (recorded from an honest run).
    Replay(Vec<Envelope>),
    /// One field of the decoded payload changed (`field` counts leaves in document order).
    Field { field: usize, change: FieldChange },
}

/// The interceptor: applies `attack` to what `target` selects, counts what it altered.
pub struct Adversary {
    pub target: Target,
    pub attack: Attack,
    altered: AtomicUsize,
    first_recipient: Mutex<Option<NodeId>>,
}

impl Adversary {
    pub fn new(target: Target, attack: Attack) -> Arc<Self> {
        Arc::new(Self {
            target,
            attack,
            altered: AtomicUsize::new(0),
            first_recipient: Mutex::new(None),
        })
    }

    /// Envelopes this adversary altered (0: the target was never sent, the case proved
    /// nothing).
    pub fn altered(&self) -> usize {
        self.altered.load(Ordering::SeqCst)
    }
}

impl Interceptor for Adversary {
    fn outgoing(&self, to: NodeId, envelope: Envelope) -> Vec<(Duration, Envelope)> {
        if !self.target.selects(&envelope) {
            return vec![(Duration::ZERO, envelope)];
        }
        let mut out = envelope.clone();
        let now = |e: Envelope| vec![(Duration::ZERO, e)];
        let result = match &self.attack {
            Attack::Drop => Vec::new(),
            Attack::Duplicate => vec![
                (Duration::ZERO, envelope.clone()),
                (Duration::ZERO, envelope),
            ],
            Attack::Delay(by) => vec![(*by, envelope)],
            Attack::WrongRound => {
                out.round = out.round.wrapping_add(1);
                now(out)
            }
            Attack::TruncatePayload => {
                out.payload.truncate(out.payload.len() / 2);
                now(out)
            }
            Attack::ExtendPayload => {
                out.payload.extend_from_slice(&[0xA5; 17]);
                now(out)
            }
            Attack::ClaimSender(other) => {
                out.from = *other;
                now(out)
            }
            Attack::Equivocate => {
                let first = {
                    let mut first = self
                        .first_recipient
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    *first.get_or_insert(to)
                };
                if to == first {
                    if let Some(payload) = mutate_field(&out.payload, 0, FieldChange::FlipBit) {
                        out.payload = payload;
                    }
                }
                now(out)
            }
            Attack::Replay(recorded) => {
                match recorded
                    .iter()
                    .find(|r| self.target.selects(r) && r.to == out.to)
                {
                    Some(old) => out.payload = old.payload.clone(),
                    None => return now(envelope),
                }
                now(out)
            }
            Attack::Field { field, change } => match mutate_field(&out.payload, *field, *change) {
                Some(payload) => {
                    out.payload = payload;
                    now(out)
                }
                None => return now(envelope),
            },
        };
        self.altered.fetch_add(1, Ordering::SeqCst);
        result
    }
}

/// Records what a node sends, unchanged: an honest run's messages, for [`Attack::Replay`]
/// and for generating the [`cases`] of a ceremony.
#[derive(Default)]
pub struct Recorder {
    sent: Mutex<Vec<Envelope>>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn sent(&self) -> Vec<Envelope> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Interceptor for Recorder {
    fn outgoing(&self, _to: NodeId, envelope: Envelope) -> Vec<(Duration, Envelope)> {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(envelope.clone());
        }
        vec![(Duration::ZERO, envelope)]
    }
}

/// One case of the matrix: a target, an attack, and a name for the report.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub target: Target,
    pub attack: Attack,
}

/// The attacks on one ceremony, generated from what the adversary sent in an honest run of it
/// (`recorded`) for the envelopes `protocol_code` selects, plus `control` kinds: every envelope
/// attack on every round, and `fields_per_round` fields of each round's payload (spread over
/// the payload) × every [`FieldChange`]. `deadline` is the ceremony's: a delay beyond it.
pub fn cases(
    recorded: &[Envelope],
    protocol_code: u8,
    control: &[&str],
    other_node: NodeId,
    deadline: Duration,
    fields_per_round: usize,
) -> Vec<Case> {
    let mut targets: Vec<(Target, Option<Vec<u8>>)> = Vec::new();
    for envelope in recorded.iter().filter(|e| e.protocol == protocol_code) {
        let target = Target::Protocol {
            code: protocol_code,
            round: envelope.round,
        };
        if !targets.iter().any(|(t, _)| *t == target) {
            targets.push((target, Some(envelope.payload.clone())));
        }
    }
    for kind in control {
        let target = Target::Control {
            kind: (*kind).to_owned(),
        };
        let payload = recorded
            .iter()
            .find(|e| target.selects(e))
            .map(|e| e.payload.clone());
        targets.push((target, payload));
    }
    let mut cases = Vec::new();
    for (target, payload) in targets {
        let label = match &target {
            Target::Protocol { round, .. } => format!("round {round}"),
            Target::Control { kind } => format!("control {kind}"),
            Target::EveryRound { .. } => "every round".into(),
        };
        let mut add = |what: String, attack: Attack| {
            cases.push(Case {
                name: format!("{label}: {what}"),
                target: target.clone(),
                attack,
            })
        };
        add("dropped".into(), Attack::Drop);
        add("duplicated".into(), Attack::Duplicate);
        add(
            "sent after the deadline".into(),
            Attack::Delay(deadline + Duration::from_secs(1)),
        );
        add("labelled with another round".into(), Attack::WrongRound);
        add("truncated".into(), Attack::TruncatePayload);
        add("extended".into(), Attack::ExtendPayload);
        add(
            format!("claims to come from node {other_node}"),
            Attack::ClaimSender(other_node),
        );
        add("equivocated".into(), Attack::Equivocate);
        add(
            "replayed from another session".into(),
            Attack::Replay(recorded.to_vec()),
        );
        let leaves = payload.as_deref().map(count_fields).unwrap_or(0);
        for field in spread(leaves, fields_per_round) {
            for change in FieldChange::ALL {
                add(
                    format!("field {field} of {leaves}: {change:?}"),
                    Attack::Field { field, change },
                );
            }
        }
    }
    cases
}

/// `k` indices spread over `0..n` (all of them when `n <= k`).
fn spread(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..k).map(|i| i * n / k).collect();
    picked.dedup();
    picked
}

/// Fields of a CBOR payload: byte strings (and arrays of bytes, as serde writes `[u8; N]`),
/// integers, text and booleans, in document order. 0 when it does not decode.
pub fn count_fields(payload: &[u8]) -> usize {
    ciborium::from_reader::<Value, _>(payload)
        .map(|mut v| {
            let mut n = 0;
            visit_mut(&mut v, &mut |_| n += 1);
            n
        })
        .unwrap_or(0)
}

fn is_byte_array(items: &[Value]) -> bool {
    items.len() >= 16
        && items
            .iter()
            .all(|i| i.as_integer().is_some_and(|n| u8::try_from(n).is_ok()))
}

/// Calls `f` on each field (see [`count_fields`]) in document order.
fn visit_mut(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match v {
        Value::Array(items) if is_byte_array(items) => f(v),
        Value::Array(items) => items.iter_mut().for_each(|i| visit_mut(i, f)),
        Value::Map(entries) => entries.iter_mut().for_each(|(_, v)| visit_mut(v, f)),
        Value::Tag(_, inner) => visit_mut(inner, f),
        Value::Bytes(_) | Value::Integer(_) | Value::Text(_) | Value::Bool(_) => f(v),
        _ => {}
    }
}

/// The value's bytes, for byte strings and byte arrays.
fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::Array(items) if is_byte_array(items) => items
            .iter()
            .map(|i| i.as_integer().and_then(|n| u8::try_from(n).ok()))
            .collect(),
        _ => None,
    }
}

/// Writes `bytes` back in the form the value had.
fn set_bytes(v: &mut Value, bytes: Vec<u8>) {
    *v = match v {
        Value::Array(_) => Value::Array(
            bytes
                .into_iter()
                .map(|b| Value::Integer(b.into()))
                .collect(),
        ),
        _ => Value::Bytes(bytes),
    };
}

const GENERATOR: [u8; 33] = [
    0x02, 0x79, 0xBE, 0x66, 0x7E, 0xF9, 0xDC, 0xBB, 0xAC, 0x55, 0xA0, 0x62, 0x95, 0xCE, 0x87, 0x0B,
    0x07, 0x02, 0x9B, 0xFC, 0xDB, 0x2D, 0xCE, 0x28, 0xD9, 0x59, 0xF2, 0x81, 0x5B, 0x16, 0xF8, 0x17,
    0x98,
];

fn change_bytes(mut b: Vec<u8>, change: FieldChange) -> Vec<u8> {
    match change {
        FieldChange::FlipBit => {
            let middle = b.len() / 2;
            if let Some(x) = b.get_mut(middle) {
                *x ^= 0x10;
            } else {
                b.push(1);
            }
            b
        }
        FieldChange::Zero => vec![0; b.len()],
        FieldChange::Identity => vec![0],
        FieldChange::Generator => GENERATOR.to_vec(),
        FieldChange::OffCurve => {
            let mut p = vec![0u8; 33];
            p[0] = 0x02;
            p[32] = 5;
            p
        }
        FieldChange::Even => {
            if let Some(x) = b.first_mut() {
                *x &= 0xFE;
            }
            if let Some(x) = b.last_mut() {
                *x &= 0xFE;
            }
            b
        }
        FieldChange::Truncate => {
            b.pop();
            b
        }
        FieldChange::Extend => {
            b.push(0x01);
            b
        }
        FieldChange::SwapWithNext => b,
    }
}

fn change_value(v: &mut Value, change: FieldChange) {
    if let Some(b) = bytes_of(v) {
        set_bytes(v, change_bytes(b, change));
        return;
    }
    *v = match (&*v, change) {
        (Value::Integer(_), FieldChange::Zero | FieldChange::Identity) => Value::Integer(0.into()),
        (Value::Integer(n), _) => {
            let n = i128::from(*n);
            Value::Integer(
                ciborium::value::Integer::try_from(n.wrapping_add(1)).unwrap_or(0.into()),
            )
        }
        (Value::Text(t), FieldChange::Truncate | FieldChange::Zero) => Value::Text(
            t.chars()
                .take(t.chars().count().saturating_sub(1))
                .collect(),
        ),
        (Value::Text(t), _) => Value::Text(format!("{t}x")),
        (Value::Bool(b), _) => Value::Bool(!b),
        (other, _) => other.clone(),
    };
}

/// The payload with field `field` changed, or `None` when it does not decode or has no such
/// field (the attack then sends the envelope unchanged and counts nothing).
pub fn mutate_field(payload: &[u8], field: usize, change: FieldChange) -> Option<Vec<u8>> {
    let mut value: Value = ciborium::from_reader(payload).ok()?;
    let mut index = 0;
    let mut done = false;
    if change == FieldChange::SwapWithNext {
        // Take field `field` and the next field of the same kind, then write each in the
        // other's place.
        let mut fields: Vec<Value> = Vec::new();
        visit_mut(&mut value.clone(), &mut |v| fields.push(v.clone()));
        let this = fields.get(field)?.clone();
        let same_kind =
            |a: &Value, b: &Value| std::mem::discriminant(a) == std::mem::discriminant(b) && a != b;
        let (next_at, next) = fields
            .iter()
            .enumerate()
            .skip(field + 1)
            .find(|(_, v)| same_kind(v, &this))
            .map(|(i, v)| (i, v.clone()))?;
        visit_mut(&mut value, &mut |v| {
            if index == field {
                *v = next.clone();
            } else if index == next_at {
                *v = this.clone();
                done = true;
            }
            index += 1;
        });
    } else {
        visit_mut(&mut value, &mut |v| {
            if index == field {
                change_value(v, change);
                done = true;
            }
            index += 1;
        });
    }
    if !done {
        return None;
    }
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).ok()?;
    (out != payload).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_and_each_change_alters_the_payload() {
        // As serde writes a message: byte strings (`serialize_bytes`), `[u8; N]` as arrays of
        // integers, integers, text.
        let message = Value::Map(vec![
            ("point".into(), Value::Bytes(GENERATOR.to_vec())),
            ("other".into(), Value::Bytes(vec![3; 33])),
            (
                "scalar".into(),
                Value::Array((0..32).map(|i| Value::Integer(i.into())).collect()),
            ),
            ("round".into(), Value::Integer(3.into())),
            ("label".into(), Value::Text("x".into())),
        ]);
        let mut payload = Vec::new();
        ciborium::into_writer(&message, &mut payload).unwrap();
        assert_eq!(count_fields(&payload), 5);
        for field in 0..5 {
            for change in FieldChange::ALL {
                let changed = mutate_field(&payload, field, change);
                if change == FieldChange::SwapWithNext {
                    // Only the first byte string has a field of its kind after it.
                    assert_eq!(changed.is_some(), field == 0, "{field} {change:?}");
                    continue;
                }
                if field == 0 && matches!(change, FieldChange::Generator | FieldChange::Even) {
                    // The generator replaced by itself; its end bytes are even already.
                    assert!(changed.is_none(), "{change:?} on the generator");
                    continue;
                }
                let changed = changed.unwrap_or_else(|| panic!("{field} {change:?}"));
                assert_ne!(changed, payload);
                assert_eq!(count_fields(&changed), 5, "the structure stays");
            }
        }
        assert_eq!(mutate_field(&payload, 5, FieldChange::Zero), None);
        assert_eq!(mutate_field(b"\xff\x00garbage", 0, FieldChange::Zero), None);
        assert_eq!(spread(100, 4), [0, 25, 50, 75]);
        assert_eq!(spread(3, 4), [0, 1, 2]);
    }
}
