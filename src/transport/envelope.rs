//! The bytes of one message on a wire: `magic u8 | version u8 | seq u64 | tag u8 | body`, little
//! endian. `seq` counts the edge's messages from 0, so a lost or reordered message is seen at
//! once; the tag says whether the body is an item or the end of the stream. A credit (the
//! receiver's cumulative count of items it has taken) is 8 bytes of its own.

/// First byte of every envelope: a message from something else on the key is refused.
pub const MAGIC: u8 = 0xFF;
/// The envelope's layout version.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER: usize = 11;

/// A message's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// An item of the edge, encoded by its [`WireCodec`].
    Item = 0,
    /// The sender is gone: nothing follows (the in-process outlet being dropped).
    End = 1,
}

/// A message that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the layout needs.
    #[error("a message of {got} bytes is cut short (needs {needed})")]
    Short {
        /// Bytes needed.
        needed: usize,
        /// Bytes there.
        got: usize,
    },
    /// Not an envelope of this version.
    #[error("not an ffstream edge message (magic {magic:#04x}, version {version})")]
    Foreign {
        /// First byte.
        magic: u8,
        /// Second byte.
        version: u8,
    },
    /// A tag or body value outside the format.
    #[error("{0}")]
    Invalid(String),
}

/// An item type that can cross a wire: a stable binary form, written without panicking and read
/// back without trusting the bytes.
pub trait WireCodec: Sized {
    /// Appends the item's bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// The item from exactly `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// The envelope of message `seq`.
pub fn seal(seq: u64, tag: Tag, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER);
    out.extend_from_slice(&[MAGIC, VERSION]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(tag as u8);
    body(&mut out);
    out
}

/// `(seq, tag, body)` of an envelope.
pub fn open(message: &[u8]) -> Result<(u64, Tag, &[u8]), DecodeError> {
    if message.len() < HEADER {
        return Err(DecodeError::Short { needed: HEADER, got: message.len() });
    }
    if message[0] != MAGIC || message[1] != VERSION {
        return Err(DecodeError::Foreign { magic: message[0], version: message[1] });
    }
    let seq = u64::from_le_bytes(le8(&message[2..10]));
    let tag = match message[10] {
        0 => Tag::Item,
        1 => Tag::End,
        t => return Err(DecodeError::Invalid(format!("unknown message tag {t}"))),
    };
    Ok((seq, tag, &message[HEADER..]))
}

/// A credit: the receiver has taken `consumed` items in all ([`GONE`]: the receiver is gone).
pub fn credit(consumed: u64) -> Vec<u8> {
    consumed.to_le_bytes().to_vec()
}

/// The credit a dropped receiver sends: no item will be taken again.
pub const GONE: u64 = u64::MAX;

/// The count in a credit message.
pub fn read_credit(message: &[u8]) -> Result<u64, DecodeError> {
    if message.len() != 8 {
        return Err(DecodeError::Short { needed: 8, got: message.len() });
    }
    Ok(u64::from_le_bytes(le8(message)))
}

fn le8(bytes: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    b
}

/// A matrix of f32 as `rows u32 | cols u32 | values`, row-major little endian: the frames and
/// activities that cross a stage boundary.
impl WireCodec for ndarray::Array2<f32> {
    fn encode(&self, out: &mut Vec<u8>) {
        let (rows, cols) = self.dim();
        out.reserve(8 + 4 * rows * cols);
        out.extend_from_slice(&(rows as u32).to_le_bytes());
        out.extend_from_slice(&(cols as u32).to_le_bytes());
        for v in self.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < 8 {
            return Err(DecodeError::Short { needed: 8, got: bytes.len() });
        }
        let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize;
        let (rows, cols) = (u32_at(0), u32_at(4));
        let needed = rows.checked_mul(cols).and_then(|n| n.checked_mul(4)).and_then(|n| n.checked_add(8));
        match needed {
            Some(n) if n == bytes.len() => {}
            Some(n) => return Err(DecodeError::Short { needed: n, got: bytes.len() }),
            None => return Err(DecodeError::Invalid(format!("a {rows}x{cols} matrix is too large"))),
        }
        let values = bytes[8..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        ndarray::Array2::from_shape_vec((rows, cols), values).map_err(|e| DecodeError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn an_envelope_reads_back_and_a_foreign_or_short_one_is_refused() {
        let m = seal(7, Tag::Item, |out| out.extend_from_slice(b"abc"));
        assert_eq!(open(&m).unwrap(), (7, Tag::Item, &b"abc"[..]));
        assert!(matches!(open(&m[..5]), Err(DecodeError::Short { .. })));
        let mut foreign = m.clone();
        foreign[0] = 0;
        assert!(matches!(open(&foreign), Err(DecodeError::Foreign { .. })));
        let mut bad_tag = m;
        bad_tag[10] = 9;
        assert!(matches!(open(&bad_tag), Err(DecodeError::Invalid(_))));
        assert_eq!(read_credit(&credit(42)).unwrap(), 42);
    }

    #[test]
    fn a_matrix_reads_back_bit_for_bit_and_a_lying_header_is_refused() {
        for (rows, cols) in [(0, 2000), (3, 5), (32, 2000)] {
            let x = Array2::from_shape_fn((rows, cols), |(r, c)| (r * 31 + c) as f32 * 0.37 - 1e-3);
            let mut bytes = Vec::new();
            x.encode(&mut bytes);
            assert_eq!(Array2::<f32>::decode(&bytes).unwrap(), x);
        }
        let mut bytes = Vec::new();
        Array2::<f32>::zeros((2, 2)).encode(&mut bytes);
        bytes[0] = 200; // claims 200 rows
        assert!(Array2::<f32>::decode(&bytes).is_err());
        bytes[0..8].copy_from_slice(&[255; 8]); // u32::MAX x u32::MAX
        assert!(Array2::<f32>::decode(&bytes).is_err());
    }
}
