//! Gzip members assembled from precompressed deflate pieces, so serving never compresses.
//!
//! A piece is raw deflate data that ends byte-aligned with no final block: either a chunk
//! compressed once at build time with a full flush, or a *stored* block (deflate's uncompressed
//! block type), which frames literal bytes without compressing them. Any sequence of pieces,
//! followed by an empty final block and the gzip trailer (CRC-32 and length, combined from the
//! pieces' own), is one valid gzip member. This is how pigz writes parallel pieces.

use bytes::{BufMut, Bytes, BytesMut};
use crc32fast::Hasher;
use flate2::{Compress, Compression, FlushCompress, Status};

/// Gzip member header: deflate, no name, no mtime, unknown OS.
pub const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty stored block with BFINAL set: ends the deflate stream on a byte boundary.
pub const FINAL_BLOCK: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];
/// Largest payload of one stored block.
const STORED_MAX: usize = 0xffff;
/// Level used for pieces compressed at build time (measured in bench: best size for its cost).
pub const LEVEL: u32 = 6;

/// CRC-32 and length of a piece's uncompressed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    pub crc: u32,
    pub len: u64,
}

impl Check {
    /// The check of `self`'s bytes followed by `next`'s.
    pub fn then(self, next: Check) -> Check {
        let mut h = Hasher::new_with_initial_len(self.crc, self.len);
        h.combine(&Hasher::new_with_initial_len(next.crc, next.len));
        Check {
            crc: h.finalize(),
            len: self.len + next.len,
        }
    }

    pub fn of(data: &[u8]) -> Check {
        let mut h = Hasher::new();
        h.update(data);
        Check {
            crc: h.finalize(),
            len: data.len() as u64,
        }
    }
}

/// Appends `data` framed as stored (uncompressed) deflate blocks.
pub fn put_stored(out: &mut Vec<u8>, data: &[u8]) {
    for block in data.chunks(STORED_MAX) {
        let len = block.len() as u16;
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

/// Appends the final block and the gzip trailer for uncompressed bytes with `check`.
pub fn put_trailer(out: &mut Vec<u8>, check: Check) {
    out.extend_from_slice(&FINAL_BLOCK);
    out.extend_from_slice(&check.crc.to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(check.len as u32).to_le_bytes());
}

/// Compresses `input` as one raw-deflate piece ending with a full flush (byte-aligned, empty
/// dictionary, no final block). Build time only.
pub fn deflate_piece(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) {
    c.reset();
    let start_in = c.total_in();
    loop {
        out.reserve(input.len() / 4 + 64);
        let consumed = (c.total_in() - start_in) as usize;
        // `compress_vec` only fails on invalid internal state, which a reset compressor never has.
        let status = c
            .compress_vec(&input[consumed..], out, FlushCompress::Full)
            .unwrap_or(Status::BufError);
        let consumed = (c.total_in() - start_in) as usize;
        // zlib's rule: the flush is complete when input is used up and output space remains.
        if consumed == input.len() && out.len() < out.capacity() {
            break;
        }
        if status == Status::BufError && out.len() < out.capacity() {
            break;
        }
    }
}

/// A new compressor for pieces.
pub fn compressor() -> Compress {
    Compress::new(Compression::new(LEVEL), false)
}

/// Gzip-compresses a whole small body once (master data blobs, at build time).
pub fn gzip_whole(input: &[u8]) -> Bytes {
    let mut c = compressor();
    let mut out = Vec::with_capacity(input.len() / 3 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    deflate_piece(&mut c, input, &mut out);
    put_trailer(&mut out, Check::of(input));
    Bytes::from(out)
}

/// Inflates a gzip member (used when loading from Redis, and by tests).
pub fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(data.len() * 4);
    flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// Builds a gzip member as a list of `Bytes` parts: small framing bytes are gathered into one
/// buffer, large precompressed slices are passed through by reference (no copy).
pub struct Assembler {
    parts: Vec<Bytes>,
    small: BytesMut,
    crc: Hasher,
    len: u64,
}

impl Assembler {
    /// Starts a gzip member.
    pub fn gzip() -> Assembler {
        let mut small = BytesMut::with_capacity(256);
        small.put_slice(&GZIP_HEADER);
        Assembler {
            parts: Vec::with_capacity(8),
            small,
            crc: Hasher::new(),
            len: 0,
        }
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.parts.push(self.small.split().freeze());
        }
    }

    fn push_big(&mut self, b: Bytes) {
        if b.len() <= 512 {
            self.small.put_slice(&b);
        } else {
            self.flush_small();
            self.parts.push(b);
        }
    }

    /// Literal bytes (JSON punctuation, envelopes, uncompressed rows), framed as stored blocks.
    pub fn literal(&mut self, data: &[u8]) {
        self.literal_bytes(Bytes::copy_from_slice(data));
    }

    /// Literal bytes held in a shared buffer, framed as stored blocks without a copy.
    pub fn literal_bytes(&mut self, data: Bytes) {
        self.len += data.len() as u64;
        self.crc.update(&data);
        let mut rest = data;
        while !rest.is_empty() {
            let n = rest.len().min(STORED_MAX);
            let block = rest.split_to(n);
            let len = n as u16;
            self.small.put_u8(0x00);
            self.small.put_u16_le(len);
            self.small.put_u16_le(!len);
            self.push_big(block);
        }
    }

    /// A precompressed piece with the check of its uncompressed bytes.
    pub fn piece(&mut self, piece: Bytes, check: Check) {
        self.crc
            .combine(&Hasher::new_with_initial_len(check.crc, check.len));
        self.len += check.len;
        self.push_big(piece);
    }

    /// Closes the member: the final block and trailer. Returns the parts and total length.
    pub fn finish(mut self) -> (Vec<Bytes>, usize) {
        self.small.put_slice(&FINAL_BLOCK);
        self.small.put_u32_le(self.crc.clone().finalize());
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.small.put_u32_le(self.len as u32);
        self.flush_small();
        let total = self.parts.iter().map(Bytes::len).sum();
        (self.parts, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn pieces_and_literals_form_one_valid_member() {
        let a: Vec<u8> = (0..5000).map(|i| b"abcdefgh"[i % 8]).collect();
        let b = br#"{"id":1,"name":"Ravi Kumar"}"#.repeat(300);
        let mut c = compressor();
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        deflate_piece(&mut c, &a, &mut pa);
        deflate_piece(&mut c, &b, &mut pb);

        let mut g = Assembler::gzip();
        g.literal(b"[");
        g.piece(Bytes::from(pa), Check::of(&a));
        g.literal(b",");
        g.piece(Bytes::from(pb), Check::of(&b));
        g.literal(&vec![b'x'; 70_000]); // crosses the stored-block limit
        g.literal(b"]");
        let (parts, len) = g.finish();
        let body = concat(&parts);
        assert_eq!(body.len(), len);

        let mut want = b"[".to_vec();
        want.extend_from_slice(&a);
        want.push(b',');
        want.extend_from_slice(&b);
        want.extend(std::iter::repeat_n(b'x', 70_000));
        want.push(b']');
        // flate2's decoder checks the CRC and ISIZE trailer.
        assert_eq!(gunzip(&body).unwrap(), want);
    }

    #[test]
    fn whole_gzip_roundtrips() {
        let data = br#"{"states":[{"id":1,"name":"Karnataka"}]}"#;
        assert_eq!(gunzip(&gzip_whole(data)).unwrap(), data);
        assert_eq!(gunzip(&gzip_whole(b"")).unwrap(), b"");
    }
}
