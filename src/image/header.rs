//! The header of a partclone image (format 0002, what partclone 0.3 writes): the filesystem, the device size it was
//! taken from, the block size and how many blocks are in use. Read from the first bytes of the stream when an image
//! is written (to record the used size) and when one is restored (to check the target partition is large enough).
//! The bytes come from a drive: the parser is bounded and never panics.

use serde::{Deserialize, Serialize};

/// `partclone-image\0`.
const MAGIC: &[u8; 16] = b"partclone-image\0";
/// Bytes of the header this parser reads: the whole header of format 0002, its CRC32 in the last 4.
pub const HEADER_BYTES: usize = 110;
/// Where the header's CRC32 (of the bytes before it) is.
const CRC_AT: usize = 106;

/// What a partclone image says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageHeader {
    /// The partclone version that wrote it (`0.3.23`).
    pub partclone: String,
    /// partclone's name of the filesystem (`EXTFS`, `FAT32`, `BTRFS`).
    pub fs: String,
    /// Bytes of the device the image was taken from: a restore target must be at least this large.
    pub device_bytes: u64,
    pub block_size: u32,
    pub total_blocks: u64,
    pub used_blocks: u64,
}

impl ImageHeader {
    /// Bytes in use in the filesystem (what the image carries).
    pub fn used_bytes(&self) -> u64 {
        self.used_blocks.saturating_mul(u64::from(self.block_size))
    }

    /// An upper bound of partclone's whole stream for this filesystem: its header, the bitmap (a bit a block), the
    /// used blocks, and their checksums (partclone 0.3 writes 4 bytes a 1,024 blocks; counted as 4 a 256, and 1 MiB
    /// more, for room).
    pub fn stream_bound(&self) -> u64 {
        self.used_bytes()
            .saturating_add(self.total_blocks.div_ceil(8))
            .saturating_add(self.used_blocks.div_ceil(256).saturating_mul(4))
            .saturating_add(1 << 20)
    }
}

/// Why the first bytes are not a partclone image this dbackup can restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("too short for a partclone image header ({0} bytes)")]
    Short(usize),
    #[error("not a partclone image (no partclone-image magic)")]
    Magic,
    #[error(
        "partclone image format {0:?} is not supported (only 0002, written by partclone 0.3 and later)"
    )]
    Version(String),
    #[error("the partclone image header is inconsistent: {0}")]
    Inconsistent(&'static str),
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    crate::stdx::show(&b[..end])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses the header at the start of `bytes` (a decompressed image stream).
pub fn parse(bytes: &[u8]) -> Result<ImageHeader, HeaderError> {
    if bytes.len() < HEADER_BYTES {
        return Err(HeaderError::Short(bytes.len()));
    }
    if &bytes[..16] != MAGIC {
        return Err(HeaderError::Magic);
    }
    let version = &bytes[30..34];
    if version != b"0002" {
        return Err(HeaderError::Version(text(version)));
    }
    if u16::from_le_bytes([bytes[34], bytes[35]]) != 0xC0DE {
        return Err(HeaderError::Inconsistent("written on a big-endian machine"));
    }
    // partclone's CRC32: seeded with all ones, without the final inversion (what `partclone -r` checks first).
    let crc = !crc32fast::hash(&bytes[..CRC_AT]);
    if bytes[CRC_AT..HEADER_BYTES] != crc.to_le_bytes() {
        return Err(HeaderError::Inconsistent(
            "its checksum does not match (the header was altered)",
        ));
    }
    let h = ImageHeader {
        partclone: text(&bytes[16..30]),
        fs: text(&bytes[36..52]),
        device_bytes: u64_at(bytes, 52),
        total_blocks: u64_at(bytes, 60),
        used_blocks: u64_at(bytes, 68),
        block_size: u32::from_le_bytes(bytes[84..88].try_into().expect("4 bytes")),
    };
    if h.block_size == 0 || !h.block_size.is_power_of_two() {
        return Err(HeaderError::Inconsistent(
            "the block size is not a power of two",
        ));
    }
    if h.used_blocks > h.total_blocks {
        return Err(HeaderError::Inconsistent("more blocks used than there are"));
    }
    if h.total_blocks
        .checked_mul(u64::from(h.block_size))
        .is_none_or(|b| b > h.device_bytes)
    {
        return Err(HeaderError::Inconsistent(
            "the blocks do not fit the device size",
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first 88 bytes of `partclone.ext4 -c` of a 190 MiB ext4 filesystem with 1 KiB blocks.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(b"0.3.23\0\0\0\0\0\0\0\0");
        b.extend_from_slice(b"0002");
        b.extend_from_slice(&0xC0DEu16.to_le_bytes());
        b.extend_from_slice(b"EXTFS\0\0\0\0\0\0\0\0\0\0\0");
        b.extend_from_slice(&199_229_440u64.to_le_bytes());
        b.extend_from_slice(&194_560u64.to_le_bytes());
        b.extend_from_slice(&48_581u64.to_le_bytes());
        b.extend_from_slice(&48_581u64.to_le_bytes());
        b.extend_from_slice(&1024u32.to_le_bytes());
        // The options (feature size, image version, cpu bits, checksum mode and size, blocks per checksum, reseed,
        // bitmap mode), then the CRC32.
        b.extend_from_slice(&hex("120000000200400020000400000400000101"));
        with_crc(b)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `b` (the header before its checksum) with partclone's CRC32 appended.
    fn with_crc(mut b: Vec<u8>) -> Vec<u8> {
        b.truncate(CRC_AT);
        let crc = !crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// A header whose checksum does not match what it says (one byte of the filesystem's name changed, as a drive
    /// could) is refused before anything is written. Before, only `partclone -r` found it, after the partition
    /// table had been written onto the target.
    #[test]
    fn an_altered_header_is_refused_by_its_checksum() {
        let mut bad = sample();
        bad[36..41].copy_from_slice(b"BTRFS");
        assert_eq!(
            parse(&bad),
            Err(HeaderError::Inconsistent(
                "its checksum does not match (the header was altered)"
            ))
        );
        assert!(parse(&with_crc(bad)).is_ok());
    }

    #[test]
    fn partclones_header_is_read() {
        let h = parse(&sample()).unwrap();
        assert_eq!(h.fs, "EXTFS");
        assert_eq!(h.partclone, "0.3.23");
        assert_eq!(h.device_bytes, 199_229_440);
        assert_eq!(h.used_bytes(), 48_581 * 1024);
        // The stream (110-byte header, bitmap, blocks, a CRC a 1,024 blocks) fits the bound.
        let stream = 110 + 194_560 / 8 + 4 + 48_581 * 1024 + 48_581u64.div_ceil(1024) * 4;
        assert!(h.stream_bound() >= stream && h.stream_bound() < stream + (2 << 20));
        let mut bad = sample();
        bad[31] = b'1';
        assert!(matches!(parse(&bad), Err(HeaderError::Version(_))));
        let mut bad = sample();
        bad[0] = b'P';
        assert_eq!(parse(&bad), Err(HeaderError::Magic));
        let mut bad = sample();
        bad[68..76].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            parse(&with_crc(bad)),
            Err(HeaderError::Inconsistent("more blocks used than there are"))
        );
        assert_eq!(parse(&sample()[..40]), Err(HeaderError::Short(40)));
    }

    proptest! {
        #[test]
        fn any_bytes_after_the_magic_parse_or_fail_without_panicking(
            rest in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut b = MAGIC.to_vec();
            b.extend(rest);
            if let Ok(h) = parse(&b) {
                prop_assert!(h.used_blocks <= h.total_blocks);
            }
        }
    }
}
