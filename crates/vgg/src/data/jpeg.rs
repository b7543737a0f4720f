//! Whether a baseline JPEG's scans hold every block they code. A decoder that meets a marker
//! (or the end of the file) before a scan's last block fills the rest in (zune-jpeg with
//! zeros, even in strict mode): a file cut short with its end marker put back decodes to a
//! picture whose lower part was invented. Walking the Huffman codes of each scan (ITU T.81,
//! F.2.2: each block's DC category and bits, then its AC run/size codes up to its end of block)
//! tells whether the coded data reaches the last block, without computing a pixel.
//!
//! Sequential (baseline and extended, SOF0/SOF1) Huffman-coded files are walked; progressive
//! and lossless ones are not (their scans refine what earlier scans coded, so a cut there blurs
//! rather than invents), nor arithmetic-coded ones, which the decoder refuses anyway.

/// A Huffman table as T.81 Annex C and F.2.2.3 build it, with a lookup of the codes of up to
/// [`FAST`] bits.
struct Table {
    /// `maxcode[l]`: the largest code of length `l` (1..=16), or -1.
    maxcode: [i32; 18],
    /// `offset[l]`: index in `values` of the first code of length `l`, minus that code.
    offset: [i32; 17],
    values: Vec<u8>,
    /// `(length, value)` of the code that starts with these [`FAST`] bits (length 0: longer).
    fast: Vec<(u8, u8)>,
}

const FAST: u32 = 9;

impl Table {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Self, String> {
        let mut maxcode = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut fast = vec![(0u8, 0u8); 1 << FAST];
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            if n > 0 {
                offset[len] = k as i32 - code;
                for _ in 0..n {
                    if len as u32 <= FAST {
                        let shift = FAST - len as u32;
                        let start = (code as usize) << shift;
                        let value = *values
                            .get(k)
                            .ok_or("a Huffman table shorter than its counts")?;
                        for e in fast.iter_mut().skip(start).take(1 << shift) {
                            *e = (len as u8, value);
                        }
                    }
                    code += 1;
                    k += 1;
                }
                maxcode[len] = code - 1;
            }
            if code > (1 << len) {
                return Err("a Huffman table with more codes than bits allow".into());
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        if k > values.len() {
            return Err("a Huffman table shorter than its counts".into());
        }
        Ok(Self {
            maxcode,
            offset,
            values,
            fast,
        })
    }
}

/// The bits of one scan's entropy-coded data: stuffed zero bytes dropped, stopping at any
/// marker but a restart's (which [`Bits::restart`] passes).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    count: u32,
}

/// The coded data ran out before the scan's last block.
struct Short;

impl<'a> Bits<'a> {
    /// Tops the accumulator up to at least 25 bits where the data allows.
    fn fill(&mut self) {
        while self.count <= 56 {
            let Some(&b) = self.data.get(self.pos) else {
                return;
            };
            if b == 0xFF {
                match self.data.get(self.pos + 1) {
                    Some(0x00) => self.pos += 2,
                    _ => return, // a marker: the data ends here
                }
            } else {
                self.pos += 1;
            }
            self.acc |= (b as u64) << (56 - self.count);
            self.count += 8;
        }
    }

    fn bits(&mut self, n: u32) -> Result<u32, Short> {
        if n == 0 {
            return Ok(0);
        }
        if self.count < n {
            self.fill();
            if self.count < n {
                return Err(Short);
            }
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.count -= n;
        Ok(v)
    }

    fn symbol(&mut self, t: &Table) -> Result<u8, Short> {
        if self.count < 16 {
            self.fill();
        }
        let peek = (self.acc >> (64 - FAST)) as usize;
        let (len, value) = t.fast[peek];
        if len > 0 && len as u32 <= self.count {
            self.acc <<= len;
            self.count -= len as u32;
            return Ok(value);
        }
        let mut code = 0i32;
        for len in 1..=16 {
            code = (code << 1) | self.bits(1)? as i32;
            if code <= t.maxcode[len] {
                return t
                    .values
                    .get((code + t.offset[len]) as usize)
                    .copied()
                    .ok_or(Short);
            }
        }
        Err(Short) // no code of 16 bits or fewer: corrupt data, as good as missing
    }

    /// At a restart interval's end: what is left before the next marker is padding, and that
    /// marker must be a restart (RSTn), after which the coding starts afresh.
    fn restart(&mut self) -> Result<(), Short> {
        self.acc = 0;
        self.count = 0;
        self.pos = next_marker(self.data, self.pos);
        // Fill bytes (0xFF) may precede any marker (T.81 B.1.1.2).
        while self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        match (self.data.get(self.pos), self.data.get(self.pos + 1)) {
            (Some(0xFF), Some(0xD0..=0xD7)) => {
                self.pos += 2;
                Ok(())
            }
            _ => Err(Short),
        }
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
}

/// `Err` (the reason) when a sequential Huffman-coded JPEG's scan ends before its last block;
/// `Ok` for a whole file, and for the kinds not walked (progressive, lossless).
pub fn check_scans(b: &[u8]) -> Result<(), String> {
    let mut tables: [[Option<Table>; 4]; 2] = Default::default();
    let (mut frame, mut restart, mut sequential) =
        (None::<(usize, usize, Vec<Component>)>, 0, false);
    let mut i = 2;
    let len_at = |i: usize| -> Option<usize> {
        b.get(i..i + 2)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
    };
    loop {
        while b.get(i) == Some(&0xFF) && b.get(i + 1) == Some(&0xFF) {
            i += 1; // fill bytes before a marker
        }
        let (Some(0xFF), Some(&code)) = (b.get(i), b.get(i + 1)) else {
            return Ok(()); // the structure is jpeg_complete's concern
        };
        i += 2;
        if code == 0xD9 {
            return Ok(());
        }
        if matches!(code, 0x01 | 0xD0..=0xD7) {
            continue;
        }
        let Some(len) = len_at(i).filter(|&l| l >= 2) else {
            return Ok(());
        };
        let Some(seg) = b.get(i + 2..i + len) else {
            return Ok(());
        };
        i += len;
        match code {
            0xC0 | 0xC1 => {
                let Some(&[_, h1, h0, w1, w0, n]) = seg.get(..6) else {
                    return Ok(()); // a frame header the decoder has refused already
                };
                sequential = true;
                let (h, w, n) = (
                    u16::from_be_bytes([h1, h0]) as usize,
                    u16::from_be_bytes([w1, w0]) as usize,
                    n as usize,
                );
                let comps = (0..n)
                    .filter_map(|k| seg.get(6 + 3 * k..9 + 3 * k))
                    .map(|c| Component {
                        id: c[0],
                        h: (c[1] >> 4).max(1) as usize,
                        v: (c[1] & 15).max(1) as usize,
                    })
                    .collect();
                frame = Some((h, w, comps));
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(()),
            0xC4 => {
                let mut s = seg;
                while s.len() >= 17 {
                    let (class, id) = ((s[0] >> 4) as usize, (s[0] & 15) as usize);
                    let counts: [u8; 16] = s[1..17].try_into().expect("16 bytes");
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    let values = s
                        .get(17..17 + n)
                        .ok_or("a Huffman table cut short")?
                        .to_vec();
                    if class < 2 && id < 4 {
                        tables[class][id] = Some(Table::new(&counts, values)?);
                    }
                    s = &s[17 + n..];
                }
            }
            0xDD => {
                restart = seg
                    .get(..2)
                    .map_or(0, |r| u16::from_be_bytes([r[0], r[1]]) as usize)
            }
            0xDA => {
                let Some((height, width, comps)) = frame.as_ref().filter(|_| sequential) else {
                    return Ok(());
                };
                let n = seg.first().map_or(0, |&n| n as usize);
                if n == 0 {
                    return Ok(()); // a scan header the decoder has refused already
                }
                let mut members = Vec::with_capacity(n);
                for k in 0..n {
                    let Some(c) = seg.get(1 + 2 * k..3 + 2 * k) else {
                        return Ok(());
                    };
                    let Some(comp) = comps.iter().find(|x| x.id == c[0]) else {
                        return Err(format!(
                            "a scan of component {}, which the frame lacks",
                            c[0]
                        ));
                    };
                    let (dc, ac) = ((c[1] >> 4) as usize, (c[1] & 15) as usize);
                    let (Some(Some(dc)), Some(Some(ac))) = (tables[0].get(dc), tables[1].get(ac))
                    else {
                        return Err("a scan whose Huffman table is not defined".into());
                    };
                    members.push((comp, dc, ac));
                }
                let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
                let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
                // Interleaved: MCUs of H x V blocks of each component; one component: its blocks.
                let (mcus, per_mcu): (usize, Vec<usize>) = if n > 1 {
                    (
                        width.div_ceil(8 * hmax) * height.div_ceil(8 * vmax),
                        members.iter().map(|(c, _, _)| c.h * c.v).collect(),
                    )
                } else {
                    let c = members[0].0;
                    (
                        (width * c.h).div_ceil(hmax).div_ceil(8)
                            * (height * c.v).div_ceil(vmax).div_ceil(8),
                        vec![1],
                    )
                };
                let mut bits = Bits {
                    data: &b[i..],
                    pos: 0,
                    acc: 0,
                    count: 0,
                };
                let short = |m: usize| {
                    format!(
                        "a scan ends after {m} of its {mcus} blocks' groups: the file was cut short (its end marker is no proof it is whole)"
                    )
                };
                for m in 0..mcus {
                    if restart > 0 && m > 0 && m % restart == 0 {
                        bits.restart().map_err(|_| short(m))?;
                    }
                    for ((_, dc, ac), &blocks) in members.iter().zip(&per_mcu) {
                        for _ in 0..blocks {
                            walk_block(&mut bits, dc, ac).map_err(|_| short(m))?;
                        }
                    }
                }
                // On to the marker after the scan's data (past any restart markers).
                let mut at = bits.pos;
                loop {
                    at = next_marker(&b[i..], at);
                    match b.get(i + at + 1) {
                        Some(0xD0..=0xD7) => at += 2,
                        _ => break,
                    }
                }
                i += at;
            }
            _ => {}
        }
    }
}

/// The position of the first marker (0xFF not followed by a stuffed 0x00) at or after `from`;
/// the data's end if none.
fn next_marker(data: &[u8], mut from: usize) -> usize {
    while from < data.len() {
        if data[from] == 0xFF && data.get(from + 1) != Some(&0x00) {
            return from;
        }
        from += 1 + (data[from] == 0xFF) as usize;
    }
    data.len()
}

/// One block: its DC difference, then AC codes up to its end of block (or 63 coefficients).
fn walk_block(bits: &mut Bits, dc: &Table, ac: &Table) -> Result<(), Short> {
    let t = bits.symbol(dc)? as u32;
    bits.bits(t.min(16))?;
    let mut k = 1;
    while k < 64 {
        let rs = bits.symbol(ac)?;
        let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
        if s == 0 {
            if r != 15 {
                break; // end of block
            }
            k += 16;
            continue;
        }
        k += r;
        bits.bits(s)?;
        k += 1;
    }
    Ok(())
}
