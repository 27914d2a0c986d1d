//! The message every contender carries, and the receiver's check of it.
//!
//! A message of `n` 8-byte little-endian words (`n = size / 8`):
//!
//! - word 0 is the sequence number `seq`; word `i` for every `i` that is a multiple of 512 (the
//!   first word of every 4 KiB page) is `seq ^ (i << 48)`: a page left over from an earlier
//!   message, or two pages swapped, cannot pass;
//! - the other words are a fixed pseudo-random pattern (the same in every message);
//! - the last word is the wrapping sum of all the words before it.
//!
//! The receiver sums *every* word and compares the stamps, so it reads every byte of every
//! message, wherever the message lies (in a buffer it copied to, or in place in shared memory).
//! The sender writes only the stamps and the sum into its prepared message (`n / 512 + 2` words),
//! then every byte goes through the channel (copied by `send`, or into a loaned sample).

use std::fmt;

/// Words per 4 KiB page: where the stamps are.
const PAGE_WORDS: usize = 512;

/// A message that is not the one expected.
#[derive(Debug)]
pub struct Mismatch(pub String);

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

fn pattern(i: usize) -> u64 {
    // SplitMix64's finaliser of the index: fixed, cheap, no two neighbours alike.
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn stamp(i: usize, seq: u64) -> u64 {
    seq ^ ((i as u64) << 48)
}

/// The sender's message of one size: prepared once, re-stamped for every sequence number.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The message.
    bytes: Vec<u8>,
    /// Sum of the pattern words (all but the stamps and the last).
    pattern_sum: u64,
    /// `BENCH_PEERS_CORRUPT=N`: flip one bit in the middle of message N after summing it, to
    /// see every receiver catch it (the run must fail).
    corrupt: Option<u64>,
}

/// The environment variable that makes every sender corrupt one message.
pub const CORRUPT_ENV: &str = "BENCH_PEERS_CORRUPT";

impl Payload {
    /// A message of `size` bytes (a multiple of 8, at least 16).
    ///
    /// # Panics
    /// If `size` is not a multiple of 8 or is below 16.
    pub fn new(size: usize) -> Payload {
        assert!(size >= 16 && size.is_multiple_of(8), "message size {size}");
        let n = size / 8;
        let mut bytes = Vec::with_capacity(size);
        let mut pattern_sum = 0u64;
        for i in 0..n {
            let w = if i.is_multiple_of(PAGE_WORDS) || i == n - 1 {
                0 // a stamp or the sum: written by `fill`
            } else {
                pattern(i)
            };
            pattern_sum = pattern_sum.wrapping_add(w);
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        let corrupt = std::env::var(CORRUPT_ENV).ok().and_then(|v| v.parse().ok());
        Payload {
            bytes,
            pattern_sum,
            corrupt,
        }
    }

    /// Flips bit 0 of a pattern word in the middle of message `corrupt` (so only the sum can
    /// catch it); mends it in the next message.
    #[cold]
    fn corrupt_or_mend(&mut self, seq: u64) {
        let n = self.bytes.len() / 8;
        let at = (n / 2 + 1).min(n - 2) * 8; // not a stamp, not the sum (for n >= 4)
        let was_flipped = self.corrupt.is_some_and(|c| c.wrapping_add(1) == seq);
        if self.corrupt == Some(seq) || was_flipped {
            self.bytes[at] ^= 1;
        }
    }

    /// The message's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Stamps message `seq` and returns its bytes.
    pub fn fill(&mut self, seq: u64) -> &[u8] {
        let n = self.bytes.len() / 8;
        let mut sum = self.pattern_sum;
        for i in (0..n - 1).step_by(PAGE_WORDS) {
            let s = stamp(i, seq);
            self.bytes[i * 8..i * 8 + 8].copy_from_slice(&s.to_le_bytes());
            sum = sum.wrapping_add(s);
        }
        self.bytes[(n - 1) * 8..].copy_from_slice(&sum.to_le_bytes());
        if self.corrupt.is_some() {
            self.corrupt_or_mend(seq);
        }
        &self.bytes
    }
}

/// The receiver's check of one message, fed in one or more contiguous parts (a message may
/// straddle the end of a ring).
#[derive(Debug)]
pub struct Check {
    seq: u64,
    n: usize,
    at: usize,
    sum: u64,
}

impl Check {
    /// Expects message `seq` of `size` bytes.
    pub fn new(seq: u64, size: usize) -> Check {
        Check {
            seq,
            n: size / 8,
            at: 0,
            sum: 0,
        }
    }

    /// Checks the next part of the message (a whole number of words).
    ///
    /// # Errors
    /// A [`Mismatch`] naming the message and word.
    pub fn feed(&mut self, part: &[u8]) -> Result<(), Mismatch> {
        if !part.len().is_multiple_of(8) || self.at + part.len() / 8 > self.n {
            return Err(Mismatch(format!(
                "message {}: a part of {} bytes at word {} of {}",
                self.seq,
                part.len(),
                self.at,
                self.n
            )));
        }
        let k = part.len() / 8;
        let has_last = self.at + k == self.n;
        let body = if has_last {
            &part[..part.len() - 8]
        } else {
            part
        };
        self.sum = self.sum.wrapping_add(sum_words(body));
        // The stamps in this part.
        let first = self.at.next_multiple_of(PAGE_WORDS);
        for i in (first..self.at + body.len() / 8).step_by(PAGE_WORDS) {
            let off = (i - self.at) * 8;
            let got = word(&part[off..off + 8]);
            if got != stamp(i, self.seq) {
                return Err(Mismatch(format!(
                    "message {}: word {i} is {got:#x}, expected {:#x} (a stale or misplaced page?)",
                    self.seq,
                    stamp(i, self.seq)
                )));
            }
        }
        if has_last {
            let got = word(&part[part.len() - 8..]);
            if got != self.sum {
                return Err(Mismatch(format!(
                    "message {}: checksum {got:#x}, sum of the words {:#x}",
                    self.seq, self.sum
                )));
            }
        }
        self.at += k;
        Ok(())
    }

    /// Ends the message.
    ///
    /// # Errors
    /// A [`Mismatch`] if the message is not complete.
    pub fn finish(self) -> Result<(), Mismatch> {
        if self.at == self.n {
            Ok(())
        } else {
            Err(Mismatch(format!(
                "message {}: {} of {} words",
                self.seq, self.at, self.n
            )))
        }
    }
}

/// Checks that `msg` is message `seq` of `size` bytes.
///
/// # Errors
/// A [`Mismatch`] naming what is wrong.
#[inline]
pub fn verify(msg: &[u8], seq: u64, size: usize) -> Result<(), Mismatch> {
    // A message of one page at most (one stamp, at word 0): the same check in one pass, inline,
    // without the bookkeeping for messages fed in parts. Any mismatch is explained by the full
    // check below.
    if msg.len() == size && (16..=PAGE_WORDS * 8).contains(&size) && size.is_multiple_of(8) {
        let (body, last) = msg.split_at(size - 8);
        let sum = body
            .chunks_exact(8)
            .fold(0u64, |acc, w| acc.wrapping_add(word(w)));
        if word(&body[..8]) == stamp(0, seq) && word(last) == sum {
            return Ok(());
        }
    }
    verify_parts(msg, seq, size)
}

/// [`verify`] through [`Check`]: any size, and the message that names a mismatch.
#[inline(never)]
fn verify_parts(msg: &[u8], seq: u64, size: usize) -> Result<(), Mismatch> {
    if msg.len() != size {
        return Err(Mismatch(format!(
            "message {seq}: {} bytes, expected {size}",
            msg.len()
        )));
    }
    let mut c = Check::new(seq, size);
    c.feed(msg)?;
    c.finish()
}

fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// The wrapping sum of the little-endian words of `b` (a multiple of 8 bytes). Four
/// independent sums, so the compiler vectorises it.
fn sum_words(b: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    let mut chunks = b.chunks_exact(32);
    for c in &mut chunks {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = a.wrapping_add(word(&c[j * 8..j * 8 + 8]));
        }
    }
    let mut s = acc.iter().fold(0u64, |s, &a| s.wrapping_add(a));
    for c in chunks.remainder().chunks_exact(8) {
        s = s.wrapping_add(word(c));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_round_trips_and_catches_corruption() {
        for size in [16, 64, 4096, 4104, 65536, 1 << 20] {
            let mut p = Payload::new(size);
            for seq in [0u64, 1, 77, u64::MAX] {
                let msg = p.fill(seq).to_vec();
                verify(&msg, seq, size).unwrap();
                assert!(verify(&msg, seq + 1, size).is_err());
                // Any one word changed is caught.
                for w in [0, size / 16, size / 8 - 1] {
                    let mut bad = msg.clone();
                    bad[w * 8] ^= 1;
                    assert!(verify(&bad, seq, size).is_err(), "size {size} word {w}");
                }
                // A page of the previous message is caught.
                if size > 8192 {
                    let old = p.fill(seq.wrapping_sub(1)).to_vec();
                    let mut mixed = msg.clone();
                    mixed[4096..8192].copy_from_slice(&old[4096..8192]);
                    assert!(verify(&mixed, seq, size).is_err());
                }
                // In parts, split anywhere on a word.
                for cut in [8, (size / 2) & !7, size - 8] {
                    let mut c = Check::new(seq, size);
                    c.feed(&msg[..cut]).unwrap();
                    c.feed(&msg[cut..]).unwrap();
                    c.finish().unwrap();
                }
            }
        }
    }
}
