//! What the runtime's edges carry, in the wire's stable binary form (issue 13, item 3): the
//! forward [`Message`]s (packets and epoch markers), the sink's [`Prediction`]s and the
//! feedback edges' [`TopDown`] state.
//!
//! A packet on the wire is its rows and per-row fields, nothing else: no `Instant` (a clock
//! means nothing on another host), only how long ago the packet was stamped and its oldest
//! frame captured, in nanoseconds, and the sender's wall clock at sending, so the receiver
//! rebuilds both on its own clock with the time on the wire added: exact on one host (one
//! clock), as close as the hosts' clocks agree across hosts (a receiver behind the sender adds
//! nothing).
//!
//! Layout (little endian; `[T]` is `count u32` then the items; a matrix is
//! [`WireCodec`] for `Array2<f32>` behind its byte length `u32`):
//!
//! ```text
//! Message: kind u8 (0 data, 1 epoch end) | body
//!   data:      seq u64 | epoch u32 | purpose u8 | step u32 | steps u32 | positives u32 |
//!              negatives u32 | neutral u32 | frames u32 | observe u8 | sent unix ns u64 |
//!              stamp age u64 | captured age u64 | x | frame [u32] | truth [u8] | embedded [u8] |
//!              goodness [f32] | layer goodness [[f32]] | features [matrix]
//!   epoch end: epoch u32 | sent unix ns u64 | stamp age u64
//! Prediction:  logits matrix
//! TopDown:     seq u64 | step u32 | has state u8 | state matrix (if any)
//! ```
//!
//! Decoding trusts no length: every count is checked against the bytes left, every per-row
//! field against the packet's rows, and the row groups against the rows, so a stage never
//! indexes past what arrived (a damaged message is an error naming the edge, never a panic).

use std::time::{Duration, Instant};

use ndarray::Array2;

use super::envelope::{DecodeError, WireCodec};
use crate::packet::{Message, Observe, Packet, Prediction, Purpose, TopDown};

const DATA: u8 = 0;
const EPOCH_END: u8 = 1;

fn purpose_code(p: Purpose) -> u8 {
    match p {
        Purpose::Train => 0,
        Purpose::Predict => 1,
        Purpose::Dream => 2,
        Purpose::Validate => 3,
        Purpose::Test => 4,
        Purpose::TrainEval => 5,
    }
}

fn purpose_of(code: u8) -> Result<Purpose, DecodeError> {
    Ok(match code {
        0 => Purpose::Train,
        1 => Purpose::Predict,
        2 => Purpose::Dream,
        3 => Purpose::Validate,
        4 => Purpose::Test,
        5 => Purpose::TrainEval,
        c => return Err(invalid(format!("unknown packet purpose {c}"))),
    })
}

fn invalid(reason: String) -> DecodeError {
    DecodeError::Invalid(reason)
}

/// Nanoseconds since `t` (saturating: a packet is not 584 years old).
fn age_ns(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `ns` nanoseconds before now on this host's clock (now, if the clock does not
/// reach that far back).
fn instant_aged(ns: u64) -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_nanos(ns)).unwrap_or(now)
}

/// The wall clock in nanoseconds since the Unix epoch (0 if the clock is before it).
fn unix_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// The time a message sent at wall clock `sent` spent on the wire, by this host's wall clock.
fn on_the_wire(sent: u64) -> u64 {
    unix_ns().saturating_sub(sent)
}

/// Appends little-endian fields.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: usize) {
        // Invariant of the callers: counts of rows, units and items, all far below 2³².
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn matrix(&mut self, m: &Array2<f32>) {
        let at = self.0.len();
        self.u32(0);
        m.encode(self.0);
        let len = self.0.len() - at - 4;
        self.0[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    }
    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.u32(items.len());
        for item in items {
            each(self, item);
        }
    }
}

/// Reads little-endian fields, never past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(DecodeError::Short { needed: self.at.saturating_add(n), got: self.bytes.len() });
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn matrix(&mut self) -> Result<Array2<f32>, DecodeError> {
        let len = self.u32()?;
        Array2::decode(self.take(len)?)
    }
    /// A count of items of at least `min_item` bytes each, checked against the bytes left
    /// before anything is allocated for them.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()?;
        let needed = self.at.saturating_add(n.saturating_mul(min_item));
        if needed > self.bytes.len() {
            return Err(DecodeError::Short { needed, got: self.bytes.len() });
        }
        Ok(n)
    }
    fn u32s(&mut self) -> Result<Vec<u32>, DecodeError> {
        let n = self.count(4)?;
        let b = self.take(n * 4)?;
        Ok(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    fn f32s(&mut self) -> Result<Vec<f32>, DecodeError> {
        let n = self.count(4)?;
        let b = self.take(n * 4)?;
        Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
    fn bytes_list(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.count(1)?;
        Ok(self.take(n)?.to_vec())
    }
    fn end(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            extra => Err(invalid(format!("{extra} bytes after the end of the message"))),
        }
    }
}

impl WireCodec for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        match self {
            Message::Data(p) => {
                w.u8(DATA);
                w.u64(p.seq);
                w.u32(p.epoch as usize);
                w.u8(purpose_code(p.purpose));
                w.u32(p.step as usize);
                w.u32(p.steps as usize);
                w.u32(p.positives);
                w.u32(p.negatives);
                w.u32(p.neutral);
                w.u32(p.frames);
                w.u8(match p.observe {
                    Observe::Neutral => 0,
                    Observe::Positives => 1,
                });
                w.u64(unix_ns());
                w.u64(age_ns(p.stamp));
                w.u64(age_ns(p.captured));
                w.matrix(&p.x);
                w.list(&p.frame, |w, &v| w.u32(v as usize));
                w.list(&p.truth, |w, &v| w.u8(v));
                w.list(&p.embedded, |w, &v| w.u8(v));
                w.list(&p.goodness, |w, v| w.0.extend_from_slice(&v.to_le_bytes()));
                w.list(&p.layer_goodness, |w, layer| w.list(layer, |w, v| w.0.extend_from_slice(&v.to_le_bytes())));
                w.list(&p.features, |w, m| w.matrix(m));
            }
            Message::EpochEnd { epoch, stamp } => {
                w.u8(EPOCH_END);
                w.u32(*epoch as usize);
                w.u64(unix_ns());
                w.u64(age_ns(*stamp));
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let message = match r.u8()? {
            DATA => Message::Data(read_packet(&mut r)?),
            EPOCH_END => {
                let epoch = r.u32()? as u32;
                let wire = on_the_wire(r.u64()?);
                Message::EpochEnd { epoch, stamp: instant_aged(r.u64()?.saturating_add(wire)) }
            }
            k => return Err(invalid(format!("unknown message kind {k}"))),
        };
        r.end()?;
        Ok(message)
    }
}

fn read_packet(r: &mut Reader<'_>) -> Result<Packet, DecodeError> {
    let seq = r.u64()?;
    let epoch = r.u32()? as u32;
    let purpose = purpose_of(r.u8()?)?;
    let (step, steps) = (r.u32()? as u32, r.u32()? as u32);
    let (positives, negatives, neutral, frames) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    let observe = match r.u8()? {
        0 => Observe::Neutral,
        1 => Observe::Positives,
        o => return Err(invalid(format!("unknown observed rows {o}"))),
    };
    let wire = on_the_wire(r.u64()?);
    let (stamp, captured) = (instant_aged(r.u64()?.saturating_add(wire)), instant_aged(r.u64()?.saturating_add(wire)));
    let x = r.matrix()?;
    let rows = x.nrows();
    if positives as u64 + negatives as u64 + neutral as u64 > rows as u64 {
        return Err(invalid(format!(
            "{positives} positive, {negatives} negative and {neutral} neutral rows in a packet of {rows}"
        )));
    }
    let per_row = |what: &str, n: usize| -> Result<(), DecodeError> {
        if n == rows {
            Ok(())
        } else {
            Err(invalid(format!("{n} values of `{what}` for {rows} rows")))
        }
    };
    let frame = r.u32s()?;
    per_row("frame", frame.len())?;
    let truth = r.bytes_list()?;
    per_row("truth", truth.len())?;
    let embedded = r.bytes_list()?;
    per_row("embedded", embedded.len())?;
    let goodness = r.f32s()?;
    per_row("goodness", goodness.len())?;
    let layers = r.count(4)?;
    let mut layer_goodness = Vec::with_capacity(layers);
    for _ in 0..layers {
        let g = r.f32s()?;
        per_row("layer goodness", g.len())?;
        layer_goodness.push(g);
    }
    let observed = match observe {
        Observe::Neutral => neutral,
        Observe::Positives => positives,
    };
    let count = r.count(4)?;
    let mut features = Vec::with_capacity(count);
    for _ in 0..count {
        let m = r.matrix()?;
        if m.nrows() != observed {
            return Err(invalid(format!("features of {} rows for {observed} observed rows", m.nrows())));
        }
        features.push(m);
    }
    Ok(Packet {
        seq,
        epoch,
        purpose,
        x,
        positives,
        negatives,
        neutral,
        frame,
        truth,
        embedded,
        frames,
        goodness,
        features,
        observe,
        layer_goodness,
        step,
        steps,
        stamp,
        captured,
    })
}

impl WireCodec for Prediction {
    fn encode(&self, out: &mut Vec<u8>) {
        Writer(out).matrix(&self.logits);
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let logits = r.matrix()?;
        r.end()?;
        Ok(Prediction { logits })
    }
}

impl WireCodec for TopDown {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.u64(self.seq);
        w.u32(self.step as usize);
        match &self.state {
            None => w.u8(0),
            Some(state) => {
                w.u8(1);
                w.matrix(state);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let (seq, step) = (r.u64()?, r.u32()? as u32);
        let state = match r.u8()? {
            0 => None,
            1 => Some(r.matrix()?),
            s => return Err(invalid(format!("unknown top-down state flag {s}"))),
        };
        r.end()?;
        Ok(TopDown { seq, step, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Packet {
        let x = Array2::from_shape_fn((6, 5), |(r, c)| r as f32 - 0.25 * c as f32);
        let mut p = Packet::new(41, 3, Purpose::Validate, x);
        p.positives = 2;
        p.negatives = 1;
        p.neutral = 3;
        p.frame = vec![9, 8, 7, 6, 5, 4];
        p.truth = vec![1, 2, 3, 4, 5, 6];
        p.embedded[2] = 7;
        p.goodness = vec![0.5; 6];
        p.layer_goodness = vec![vec![1.5; 6], vec![-2.0; 6]];
        p.features = vec![Array2::from_elem((3, 4), 0.75), Array2::from_elem((3, 2), -1.0)];
        p.step = 1;
        p.steps = 4;
        p.frames = 3;
        p
    }

    fn encoded(m: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        out
    }

    #[test]
    fn a_packet_reads_back_field_for_field_with_its_ages_on_the_receivers_clock() {
        let p = packet();
        let before = Instant::now();
        let Message::Data(q) = Message::decode(&encoded(&Message::Data(p.clone()))).unwrap() else {
            panic!("a data message")
        };
        assert_eq!((q.seq, q.epoch, q.purpose, q.step, q.steps), (41, 3, Purpose::Validate, 1, 4));
        assert_eq!((q.positives, q.negatives, q.neutral, q.frames, q.observe), (2, 1, 3, 3, Observe::Neutral));
        assert_eq!(q.x, p.x);
        assert_eq!((&q.frame, &q.truth, &q.embedded), (&p.frame, &p.truth, &p.embedded));
        assert_eq!((&q.goodness, &q.layer_goodness, &q.features), (&p.goodness, &p.layer_goodness, &p.features));
        // Stamped just now: its rebuilt stamp lies within this test's lifetime.
        assert!(q.stamp <= Instant::now() && q.stamp + Duration::from_secs(5) > before);
        let m = Message::decode(&encoded(&Message::EpochEnd { epoch: 9, stamp: Instant::now() })).unwrap();
        assert!(matches!(m, Message::EpochEnd { epoch: 9, .. }));
    }

    #[test]
    fn the_time_on_the_wire_counts_in_the_packets_age() {
        let mut bytes = encoded(&Message::Data(packet()));
        // The sender's wall clock (after kind, seq, epoch, purpose, step, steps, four counts and
        // observe): as if sent 300 ms ago.
        let at = 1 + 8 + 4 + 1 + 4 + 4 + 4 * 4 + 1;
        let sent = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) - 300_000_000;
        bytes[at..at + 8].copy_from_slice(&sent.to_le_bytes());
        let Message::Data(q) = Message::decode(&bytes).unwrap() else { panic!("a data message") };
        let age = q.captured.elapsed();
        assert!(age >= Duration::from_millis(300) && age < Duration::from_secs(5), "{age:?}");
    }

    #[test]
    fn a_packet_whose_fields_disagree_with_its_rows_is_refused_not_trusted() {
        let mut p = packet();
        p.truth.pop();
        let e = Message::decode(&encoded(&Message::Data(p))).err().unwrap();
        assert!(e.to_string().contains("`truth`"), "{e}");
        let mut p = packet();
        p.neutral = 9;
        assert!(Message::decode(&encoded(&Message::Data(p))).is_err());
        let mut p = packet();
        p.features[1] = Array2::zeros((2, 2));
        assert!(Message::decode(&encoded(&Message::Data(p))).err().unwrap().to_string().contains("observed"));
        // Every cut of a good message is an error, never a panic.
        let good = encoded(&Message::Data(packet()));
        for cut in 0..good.len() {
            assert!(Message::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(Message::decode(&long).is_err());
    }

    #[test]
    fn predictions_and_top_down_state_read_back() {
        let p = Prediction { logits: Array2::from_elem((4, 10), 0.1) };
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(Prediction::decode(&out).unwrap().logits, p.logits);
        for t in [TopDown::neutral(), TopDown { seq: 5, step: 2, state: Some(Array2::from_elem((3, 7), 2.5)) }] {
            let mut out = Vec::new();
            t.encode(&mut out);
            let back = TopDown::decode(&out).unwrap();
            assert_eq!((back.seq, back.step, back.state), (t.seq, t.step, t.state));
        }
    }
}
