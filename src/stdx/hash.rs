//! The hashing readers: a stream read to its end through a caller's buffer, its length and sha256 returned
//! ([`sha256_reader`], [`hash_into`] after a prefix), or counted and hashed as another reader consumes it ([`HashingReader`]).

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// Reads `r` to its end through `buf`, returning how many bytes it gave and their sha256. `seen(n)` is called after
/// every read (a progress bar); a read interrupted by a signal is retried, any other error ends the read.
pub fn sha256_reader(
    r: &mut dyn Read,
    buf: &mut [u8],
    seen: impl FnMut(u64),
) -> io::Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let total = hash_into(&mut hasher, r, buf, seen)?;
    Ok((total, hasher.finalize().into()))
}

/// [`sha256_reader`] into a hasher that may already hold a prefix (a sparse member's map): `r`'s bytes are added to
/// `hasher`; returns how many there were.
pub fn hash_into(
    hasher: &mut Sha256,
    r: &mut dyn Read,
    buf: &mut [u8],
    mut seen: impl FnMut(u64),
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        seen(n as u64);
    }
    Ok(total)
}

/// Counts and hashes what is read through it, for a stream another reader consumes (tar's, a sparse map's): the
/// bytes read so far are `count`, their sha256 is `hasher`'s.
pub struct HashingReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub count: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_hashed_whole_through_a_small_buffer() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut reads = 0;
        let (len, sum) = sha256_reader(&mut &data[..], &mut [0u8; 7], |_| reads += 1).unwrap();
        assert_eq!(len, 10_000);
        assert_eq!(sum, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(reads, 10_000usize.div_ceil(7));
        let (len, sum) = sha256_reader(&mut io::empty(), &mut [0u8; 7], |_| {}).unwrap();
        assert_eq!(len, 0);
        assert_eq!(sum, <[u8; 32]>::from(Sha256::digest(b"")));
    }
}
