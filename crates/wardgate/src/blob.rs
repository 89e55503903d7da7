//! A cached master-data answer: one JSON body kept gzip-compressed and as identity bytes.

use bytes::{BufMut, Bytes};

use crate::gzip::{self, Check};
use crate::time::EpochMs;

/// Format version of the Redis encoding; bump on any change to `encode`.
pub const FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"WGBL";

/// A cacheable upstream answer (200, JSON), compressed once when built.
#[derive(Debug)]
pub struct Blob {
    /// When it was fetched, epoch ms.
    pub built_at: EpochMs,
    pub content_type: String,
    pub identity: Bytes,
    pub gzip: Bytes,
    /// Identifies this content: the ETag is derived from it.
    pub tag: String,
}

impl Blob {
    /// Compresses once; the only compression wardgate does outside snapshot builds.
    pub fn new(identity: Bytes, content_type: String, built_at: EpochMs) -> Blob {
        let check = Check::of(&identity);
        Blob {
            built_at,
            content_type,
            gzip: gzip::gzip_whole(&identity),
            tag: format!("{:08x}{:x}{:x}", check.crc, check.len, built_at.0),
            identity,
        }
    }

    pub fn weight(&self) -> usize {
        self.identity.len() + self.gzip.len() + self.content_type.len() + 128
    }

    /// Versioned encoding for Redis: the gzip bytes only; identity is inflated on load.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.gzip.len() + 64);
        out.extend_from_slice(MAGIC);
        out.put_u16_le(FORMAT_VERSION);
        out.put_i64_le(self.built_at.0);
        out.put_u16_le(self.content_type.len() as u16);
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(&self.gzip);
        out
    }

    /// `None` for another format version or damaged data: the caller treats it as a miss.
    pub fn decode(data: &[u8]) -> Option<Blob> {
        if data.len() < 16 || &data[..4] != MAGIC {
            return None;
        }
        if u16::from_le_bytes([data[4], data[5]]) != FORMAT_VERSION {
            return None;
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&data[6..14]);
        let built_at = EpochMs(i64::from_le_bytes(at));
        let ct_len = u16::from_le_bytes([data[14], data[15]]) as usize;
        let ct = data.get(16..16 + ct_len)?;
        let content_type = String::from_utf8(ct.to_vec()).ok()?;
        let gz = Bytes::copy_from_slice(data.get(16 + ct_len..)?);
        // gunzip checks the CRC, so damaged data is refused here.
        let identity = Bytes::from(gzip::gunzip(&gz).ok()?);
        let check = Check::of(&identity);
        Some(Blob {
            built_at,
            content_type,
            identity,
            gzip: gz,
            tag: format!("{:08x}{:x}{:x}", check.crc, check.len, built_at.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_version_check() {
        let b = Blob::new(
            Bytes::from_static(br#"{"parties":[]}"#),
            "application/json".into(),
            EpochMs(7),
        );
        let enc = b.encode();
        let back = Blob::decode(&enc).unwrap();
        assert_eq!(back.identity, b.identity);
        assert_eq!(back.tag, b.tag);
        let mut other = enc.clone();
        other[4] = 2;
        assert!(Blob::decode(&other).is_none());
        assert!(Blob::decode(&enc[..enc.len() - 3]).is_none());
    }
}
