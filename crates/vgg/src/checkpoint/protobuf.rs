//! Protocol Buffers' wire format, read as a stream and written to bytes: just what the authors'
//! `.caffemodel` and ONNX models need. Messages are read field by field from any `Read`, a
//! sub-message through a reader limited to its length, so a 528 MB model is never held twice:
//! a packed float array goes straight from the file into its `Vec<f32>`.

use std::io::Read;

/// A field's payload, as the wire says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Varint(u64),
    Fixed64(u64),
    /// A length-delimited field of this many bytes, not read yet.
    Len(u64),
    Fixed32(u32),
}

/// A message being read from `r` (the whole stream, or a sub-message's `Take`).
pub struct Message<R> {
    r: R,
    /// Bytes read so far, for error messages.
    offset: u64,
    /// The message's length when known (a file's size, a sub-message's length): no field may
    /// claim more bytes than are left, so nothing is allocated for bytes that are not there,
    /// and a message that ends early is truncated, not shorter.
    len: Option<u64>,
}

/// What is wrong with the bytes, at which offset of the message.
#[derive(Debug)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, WireError>;

impl<R: Read> Message<R> {
    pub fn new(r: R) -> Self {
        Self {
            r,
            offset: 0,
            len: None,
        }
    }

    /// A message of exactly `len` bytes (a file of that size).
    pub fn sized(r: R, len: u64) -> Self {
        Self {
            r,
            offset: 0,
            len: Some(len),
        }
    }

    /// Refuses a field of `n` bytes that the message does not have left.
    fn need(&self, n: u64) -> Result<()> {
        match self.len {
            Some(len) if n > len.saturating_sub(self.offset) => Err(WireError(format!(
                "truncated: a field of {n} bytes at byte {}, with {} left",
                self.offset,
                len.saturating_sub(self.offset)
            ))),
            _ => Ok(()),
        }
    }

    fn byte(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(0) => Ok(None),
            Ok(_) => {
                self.offset += 1;
                Ok(Some(b[0]))
            }
            Err(e) => Err(WireError(format!(
                "read error at byte {}: {e}",
                self.offset
            ))),
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.r.read_exact(buf).map_err(|_| {
            WireError(format!(
                "truncated at byte {}: {} more bytes expected",
                self.offset,
                buf.len()
            ))
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self
                .byte()?
                .ok_or_else(|| WireError(format!("truncated varint at byte {}", self.offset)))?;
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError(format!(
            "varint longer than 10 bytes at byte {}",
            self.offset
        )))
    }

    /// The next field's number and payload header; `None` at the end of the message.
    pub fn field(&mut self) -> Result<Option<(u32, Wire)>> {
        let key = match self.byte()? {
            None => {
                return match self.len {
                    Some(len) if self.offset < len => Err(WireError(format!(
                        "truncated at byte {} of a {len}-byte message",
                        self.offset
                    ))),
                    _ => Ok(None),
                };
            }
            Some(b) if b & 0x80 == 0 => b as u64,
            Some(b) => {
                let rest = self.varint()?;
                (b & 0x7f) as u64 | rest << 7
            }
        };
        let (number, kind) = ((key >> 3) as u32, key & 7);
        let wire = match kind {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let mut b = [0u8; 8];
                self.exact(&mut b)?;
                Wire::Fixed64(u64::from_le_bytes(b))
            }
            2 => Wire::Len(self.varint()?),
            5 => {
                let mut b = [0u8; 4];
                self.exact(&mut b)?;
                Wire::Fixed32(u32::from_le_bytes(b))
            }
            other => {
                return Err(WireError(format!(
                    "wire type {other} at byte {}: not a protobuf message",
                    self.offset
                )));
            }
        };
        Ok(Some((number, wire)))
    }

    /// The sub-message of a `Len` field of `len` bytes.
    pub fn sub(&mut self, len: u64) -> Result<Message<std::io::Take<&mut R>>> {
        self.need(len)?;
        self.offset = self.offset.saturating_add(len);
        Ok(Message::sized((&mut self.r).take(len), len))
    }

    /// Skips a `Len` field's bytes.
    pub fn skip(&mut self, len: u64) -> Result<()> {
        self.need(len)?;
        let copied = std::io::copy(&mut (&mut self.r).take(len), &mut std::io::sink())
            .map_err(|e| WireError(format!("read error: {e}")))?;
        if copied < len {
            return Err(WireError(format!(
                "truncated at byte {}",
                self.offset.saturating_add(copied)
            )));
        }
        self.offset = self.offset.saturating_add(len);
        Ok(())
    }

    /// A `Len` field's bytes, at most `limit` of them.
    pub fn bytes(&mut self, len: u64, limit: u64) -> Result<Vec<u8>> {
        if len > limit {
            return Err(WireError(format!(
                "a field of {len} bytes, over the {limit} allowed"
            )));
        }
        self.need(len)?;
        let mut buf = vec![0u8; len as usize];
        self.exact(&mut buf)?;
        Ok(buf)
    }

    /// A `Len` field's bytes as UTF-8 text (at most 64 KiB).
    pub fn string(&mut self, len: u64) -> Result<String> {
        String::from_utf8(self.bytes(len, 1 << 16)?).map_err(|_| {
            WireError(format!(
                "text that is not UTF-8 before byte {}",
                self.offset
            ))
        })
    }

    /// A packed array of `len` bytes of little-endian `f32`, appended to `out` (at most
    /// `limit` values in all), read in chunks straight into it.
    pub fn packed_f32(&mut self, len: u64, out: &mut Vec<f32>, limit: usize) -> Result<()> {
        if !len.is_multiple_of(4) {
            return Err(WireError(format!(
                "a float array of {len} bytes is not a whole number of floats"
            )));
        }
        let n = (len / 4) as usize;
        if out.len() + n > limit {
            return Err(WireError(format!(
                "{} floats, over the {limit} allowed",
                out.len() + n
            )));
        }
        self.need(len)?;
        out.reserve(n);
        let mut buf = vec![0u8; 1 << 16];
        let mut left = len as usize;
        while left > 0 {
            let take = left.min(buf.len());
            self.exact(&mut buf[..take])?;
            out.extend(
                buf[..take]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            left -= take;
        }
        Ok(())
    }

    /// A packed array of `len` bytes of varints (int64, int32, enums).
    pub fn packed_varints(&mut self, len: u64, limit: usize) -> Result<Vec<u64>> {
        let mut sub = self.sub(len)?;
        let mut out = Vec::new();
        while sub.offset < len {
            if out.len() >= limit {
                return Err(WireError(format!("more than {limit} values")));
            }
            out.push(sub.varint()?);
        }
        Ok(out)
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// A message being written.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }

    pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.varint(v);
        self
    }

    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.uint(field, v as u64)
    }

    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.buf.extend(v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.buf.extend(b);
        self
    }

    pub fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn message(&mut self, field: u32, m: &Writer) -> &mut Self {
        self.bytes(field, &m.buf)
    }

    pub fn packed_ints(&mut self, field: u32, values: &[i64]) -> &mut Self {
        let mut w = Writer::default();
        for &v in values {
            w.varint(v as u64);
        }
        self.bytes(field, &w.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let mut inner = Writer::default();
        inner.string(1, "conv1_1").packed_ints(2, &[3, 64, 300]);
        let floats: Vec<u8> = [1.5f32, -2.0, 0.25]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let mut outer = Writer::default();
        outer
            .uint(1, 7)
            .message(100, &inner)
            .bytes(5, &floats)
            .float(6, 3.5);
        let mut m = Message::new(&outer.buf[..]);
        assert_eq!(m.field().unwrap(), Some((1, Wire::Varint(7))));
        let Some((100, Wire::Len(n))) = m.field().unwrap() else {
            panic!()
        };
        let mut sub = m.sub(n).unwrap();
        let Some((1, Wire::Len(k))) = sub.field().unwrap() else {
            panic!()
        };
        assert_eq!(sub.string(k).unwrap(), "conv1_1");
        let Some((2, Wire::Len(k))) = sub.field().unwrap() else {
            panic!()
        };
        assert_eq!(sub.packed_varints(k, 10).unwrap(), [3, 64, 300]);
        assert_eq!(sub.field().unwrap(), None);
        let Some((5, Wire::Len(k))) = m.field().unwrap() else {
            panic!()
        };
        let mut out = Vec::new();
        m.packed_f32(k, &mut out, 10).unwrap();
        assert_eq!(out, [1.5, -2.0, 0.25]);
        assert_eq!(
            m.field().unwrap(),
            Some((6, Wire::Fixed32(3.5f32.to_bits())))
        );
        assert_eq!(m.field().unwrap(), None);
        // Cut anywhere: an error, never a panic.
        for cut in 0..outer.buf.len() {
            let mut m = Message::new(&outer.buf[..cut]);
            let mut guard = 0;
            while let Ok(Some((_, w))) = m.field() {
                if let Wire::Len(n) = w
                    && m.skip(n).is_err()
                {
                    break;
                }
                guard += 1;
                assert!(guard < 100);
            }
        }
        // Of a known length: a cut message is an error, never a shorter message.
        for cut in 0..outer.buf.len() {
            let mut m = Message::sized(&outer.buf[..cut], outer.buf.len() as u64);
            let whole = loop {
                match m.field() {
                    Ok(Some((_, Wire::Len(n)))) if m.skip(n).is_err() => break false,
                    Ok(Some(_)) => {}
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            assert!(!whole, "cut at byte {cut} read as a whole message");
        }
        // A field that claims more bytes than are left is refused before any allocation.
        let mut huge = Writer::default();
        huge.varint(5 << 3 | 2);
        huge.varint(8_000_000_000);
        huge.buf.extend([0u8; 4]);
        let mut m = Message::sized(&huge.buf[..], huge.buf.len() as u64);
        let Some((5, Wire::Len(n))) = m.field().unwrap() else {
            panic!()
        };
        let mut out = Vec::new();
        let err = m.packed_f32(n, &mut out, usize::MAX).unwrap_err();
        assert!(err.0.contains("truncated"), "{err}");
        assert_eq!(out.capacity(), 0);
    }
}
