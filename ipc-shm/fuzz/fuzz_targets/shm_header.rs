//! Header validation and ring opening on a segment whose first bytes (header, ring metadata,
//! positions) are arbitrary: `Header::validate` only succeeds when the fields are exactly the
//! ones asked for, and `Ring::open` only with a capacity that fits the real segment; everything
//! else is a typed error. The endpoints then attach or refuse with a typed error.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ipc_shm::{Anon, Error, Header, Ring};
use libfuzzer_sys::fuzz_target;

static SEG: OnceLock<Anon> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let seg = SEG.get_or_init(|| Anon::new(Ring::segment_size(4096).unwrap()).unwrap());
    seg.fill(0, seg.len(), 0).unwrap();
    let n = data.len().min(seg.len());
    seg.write_bytes(0, &data[..n]).unwrap();

    let h = Header::at(seg, 0).unwrap();
    let magic = seg.read::<u64>(0).unwrap();
    let layout = seg.read::<u64>(8).unwrap();
    let version = seg.read::<u32>(16).unwrap();
    let ready = seg.read::<u32>(20).unwrap() == 1;
    assert_eq!(h.is_ready(), ready);
    assert_eq!(h.layout_size(), if ready { layout } else { 0 });
    match h.validate(magic, version, layout) {
        Ok(()) => assert!(ready),
        Err(Error::NotPublished) => assert!(!ready),
        Err(e) => panic!("unexpected {e:?}"),
    }
    match h.validate(magic ^ 1, version, layout) {
        Err(Error::NotPublished | Error::Incompatible { what: "magic" }) => {}
        r => panic!("a wrong magic validated: {r:?}"),
    }
    assert!(matches!(
        h.wait_ready(Duration::ZERO),
        Ok(()) | Err(Error::TimedOut)
    ));

    match Ring::open(seg) {
        Ok(ring) => {
            let cap = ring.capacity();
            assert!(cap.is_power_of_two() && cap >= 64 && 384 + cap <= seg.len());
            let max = if cap >= 2048 { cap - 72 } else { cap - 16 };
            assert_eq!(ring.max_message(), max);
            match Ring::open(seg).unwrap().into_reader() {
                Ok(mut rx) => {
                    let mut buf = vec![0u8; cap];
                    match rx.try_recv(&mut buf) {
                        Ok(n) => assert!(n <= max),
                        Err(
                            Error::WouldBlock
                            | Error::PeerGone
                            | Error::Corrupt { .. }
                            | Error::BufferTooSmall { .. },
                        ) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                Err(Error::Corrupt { .. } | Error::RoleTaken) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
            match ring.into_writer() {
                Ok(mut tx) => match tx.try_send(b"probe") {
                    Ok(())
                    | Err(Error::WouldBlock | Error::PeerGone | Error::Corrupt { .. }) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                },
                // A scribbled reader state can say it waits on a doorbell this ring lacks.
                Err(Error::Corrupt { .. } | Error::RoleTaken | Error::NoDoorbell) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        Err(Error::NotPublished | Error::Incompatible { .. }) => {}
        Err(e) => panic!("unexpected {e:?}"),
    }
});
