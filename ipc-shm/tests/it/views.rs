//! Typed views: checked offsets, alignment, overflow, ShmSafe structs, the header helper.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ipc_shm::{Anon, Error, Header, shm_atomic, shm_safe};

shm_safe! {
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Point {
        x: f64,
        y: f64,
        tag: u32,
        pad: [u8; 4],
    }
}

shm_atomic! {
    #[derive(Debug)]
    struct Stats {
        sent: AtomicU64,
        dropped: AtomicU32,
        flags: AtomicU32,
    }
}

#[test]
fn typed_values_round_trip_at_any_offset() {
    let a = Anon::new(4096).unwrap();
    let p = Point {
        x: 1.5,
        y: -2.0,
        tag: 9,
        pad: [0; 4],
    };
    a.write(3, &p).unwrap(); // unaligned is fine for copies
    assert_eq!(a.read::<Point>(3).unwrap(), p);
    a.write_slice::<u16>(100, &[1, 2, 3]).unwrap();
    assert_eq!(a.read_vec::<u16>(100, 3).unwrap(), vec![1, 2, 3]);
    a.write::<[u32; 4]>(200, &[7; 4]).unwrap();
    assert_eq!(a.read::<[u32; 4]>(200).unwrap(), [7; 4]);
}

#[test]
fn out_of_range_overflow_and_misalignment_are_typed_errors() {
    let a = Anon::new(4096).unwrap();
    assert!(matches!(
        a.read::<u64>(4089),
        Err(Error::OutOfBounds {
            offset: 4089,
            len: 8,
            region: 4096
        })
    ));
    assert!(matches!(
        a.read::<u8>(usize::MAX),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        a.write_bytes(4000, &[0; 97]),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        a.read_vec::<u64>(0, usize::MAX / 4),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        a.read_vec::<u64>(8, 512),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        a.fill(usize::MAX, 2, 0),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        a.atomic::<AtomicU64>(4),
        Err(Error::Misaligned {
            offset: 4,
            align: 8
        })
    ));
    assert!(matches!(
        a.atomic::<AtomicU64>(4096),
        Err(Error::OutOfBounds { .. })
    ));
    // Nothing was written by the failed calls.
    assert!(a.read_vec::<u64>(0, 512).unwrap().iter().all(|&w| w == 0));
}

#[test]
fn slices_are_copied_in_one_piece_and_zero_sized_counts_cannot_hang() {
    let _wd = ipc_testkit::Watchdog::new("zst", std::time::Duration::from_secs(20));
    let a = Anon::new(4096).unwrap();
    let pts: Vec<Point> = (0..50)
        .map(|i| Point {
            x: f64::from(i),
            y: -f64::from(i),
            tag: i as u32,
            pad: [i as u8; 4],
        })
        .collect();
    a.write_slice(5, &pts).unwrap();
    assert_eq!(a.read_vec::<Point>(5, 50).unwrap(), pts);
    assert!(matches!(
        a.write_slice(4096 - 24 * 50 + 1, &pts),
        Err(Error::OutOfBounds { .. })
    ));
    // Zero-sized values: any count fits in zero bytes, and costs nothing.
    assert_eq!(
        a.read_vec::<()>(4096, usize::MAX).unwrap().len(),
        usize::MAX
    );
    assert_eq!(
        a.read_vec::<[u64; 0]>(0, usize::MAX >> 1).unwrap().len(),
        usize::MAX >> 1
    );
    a.write_slice(0, &[(); usize::MAX]).unwrap();
    assert!(matches!(
        a.read_vec::<()>(4097, 1),
        Err(Error::OutOfBounds { .. })
    ));
}

#[test]
fn atomics_are_shared_in_place() {
    let a = Anon::new(4096).unwrap();
    let s = a.atomic::<Stats>(64).unwrap();
    s.sent.fetch_add(5, Ordering::SeqCst);
    s.dropped.store(2, Ordering::SeqCst);
    assert_eq!(a.read::<u64>(64).unwrap(), 5);
    assert_eq!(a.read::<u32>(72).unwrap(), 2);
    let arr = a.atomic::<[AtomicU32; 4]>(128).unwrap();
    arr[3].store(11, Ordering::SeqCst);
    assert_eq!(a.read::<u32>(140).unwrap(), 11);
}

#[test]
fn header_tells_half_built_and_foreign_segments_apart() {
    const MAGIC: u64 = u64::from_le_bytes(*b"TESTHDR1");
    let a = Anon::new(4096).unwrap();
    let h = Header::at(&a, 0).unwrap();
    assert!(matches!(
        h.validate(MAGIC, 1, 4096),
        Err(Error::NotPublished)
    ));
    assert!(matches!(
        h.wait_ready(std::time::Duration::from_millis(10)),
        Err(Error::TimedOut)
    ));
    h.publish(MAGIC, 1, 4096);
    h.validate(MAGIC, 1, 4096).unwrap();
    h.wait_ready(std::time::Duration::MAX).unwrap();
    assert!(matches!(
        h.validate(MAGIC + 1, 1, 4096),
        Err(Error::Incompatible { what: "magic" })
    ));
    assert!(matches!(
        h.validate(MAGIC, 2, 4096),
        Err(Error::Incompatible { what: "version" })
    ));
    assert!(matches!(
        h.validate(MAGIC, 1, 8192),
        Err(Error::Incompatible { .. })
    ));
    assert!(matches!(Header::at(&a, 4), Err(Error::Misaligned { .. })));
}
