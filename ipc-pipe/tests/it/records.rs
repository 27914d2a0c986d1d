//! Atomic records: many writer processes, one pipe, every record whole.

use std::io::Read;

use ipc_pipe::{ChildFds, Error, PIPE_BUF, pipe};
use ipc_testkit::{SplitMix64, Watchdog, child, fnv1a64, role, test_path};

use crate::{LIMIT, spawn};

const WRITERS: u16 = 16;
const RECORDS: u32 = 400;
/// len u16, writer u16, seq u32, checksum of the payload u64.
const HEADER: usize = 16;

#[test]
fn records_up_to_pipe_buf_from_16_writers_never_interleave_and_larger_ones_are_refused() {
    if let Some(role) = role() {
        let id: u16 = role.parse().unwrap();
        let w = crate::inherited_writer(3);
        let mut rng = SplitMix64::new(u64::from(id) + 1);
        let mut rec = vec![0u8; PIPE_BUF];
        for seq in 0..RECORDS {
            let len = rng.range(HEADER as u64, PIPE_BUF as u64) as usize;
            rng.fill(&mut rec[HEADER..len]);
            let sum = fnv1a64(&rec[HEADER..len]);
            rec[0..2].copy_from_slice(&(len as u16).to_le_bytes());
            rec[2..4].copy_from_slice(&id.to_le_bytes());
            rec[4..8].copy_from_slice(&seq.to_le_bytes());
            rec[8..16].copy_from_slice(&sum.to_le_bytes());
            w.write_atomic(&rec[..len]).unwrap();
            if seq % 100 == 0 {
                // One byte too many: refused whole, nothing of it reaches the pipe (the reader
                // would find a record it cannot parse).
                let err = w.write_atomic(&[0xEE; PIPE_BUF + 1]).unwrap_err();
                assert!(
                    matches!(err, Error::MessageTooLarge { len, max }
                        if len == PIPE_BUF as u64 + 1 && max == PIPE_BUF as u64),
                    "{err:?}"
                );
            }
        }
        return;
    }
    let _wd = Watchdog::new("16 writers", LIMIT);
    let (mut r, w) = pipe().unwrap();
    let procs: Vec<_> = (0..WRITERS)
        .map(|id| {
            let mut cmd = child(
                &test_path!(
                    records_up_to_pipe_buf_from_16_writers_never_interleave_and_larger_ones_are_refused
                ),
                &id.to_string(),
            );
            ChildFds::new()
                .fd_at(3, w.try_clone().unwrap())
                .apply(&mut cmd)
        .unwrap();
            spawn(cmd)
        })
        .collect();
    drop(w);
    let mut stream = Vec::new();
    r.read_to_end(&mut stream).unwrap();
    for p in procs {
        p.expect_success(LIMIT);
    }
    let mut next_seq = vec![0u32; usize::from(WRITERS)];
    let mut at = 0;
    let mut count = 0;
    while at < stream.len() {
        let len = usize::from(u16::from_le_bytes([stream[at], stream[at + 1]]));
        assert!(
            (HEADER..=PIPE_BUF).contains(&len),
            "bad length {len} at {at}"
        );
        let rec = &stream[at..at + len];
        let id = usize::from(u16::from_le_bytes([rec[2], rec[3]]));
        let seq = u32::from_le_bytes(rec[4..8].try_into().unwrap());
        let sum = u64::from_le_bytes(rec[8..16].try_into().unwrap());
        assert_eq!(sum, fnv1a64(&rec[HEADER..]), "record {id}/{seq} corrupted");
        assert_eq!(seq, next_seq[id], "writer {id}: record lost or reordered");
        next_seq[id] += 1;
        at += len;
        count += 1;
    }
    assert_eq!(count, u32::from(WRITERS) * RECORDS);
    assert_eq!(at, stream.len(), "not one byte beyond the records");
    assert!(next_seq.iter().all(|&n| n == RECORDS));
}
