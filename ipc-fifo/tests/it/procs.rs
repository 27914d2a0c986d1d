use std::io::{Read, Write};
use std::time::Duration;

use ipc_fifo::{Fifo, FifoReader, FifoWriter};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, role, test_path};

use crate::{CHILD_LIMIT, PATH_ENV, child_path, place};

const BYTES: usize = 1 << 20;

fn payload() -> Vec<u8> {
    let mut v = vec![0u8; BYTES];
    SplitMix64::new(42).fill(&mut v);
    v
}

#[test]
fn unrelated_processes_exchange_data_through_a_created_fifo() {
    match role().as_deref() {
        Some("writer") => {
            let mut w = FifoWriter::open_timeout(child_path(), CHILD_LIMIT).unwrap();
            w.write_all(&payload()).unwrap();
            return;
        }
        Some("reader") => {
            let mut r = FifoReader::open_timeout(child_path(), CHILD_LIMIT).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), BYTES);
            assert_eq!(fnv1a64(&got), fnv1a64(&payload()));
            return;
        }
        _ => {}
    }
    let _wd = Watchdog::new("unrelated_processes", Duration::from_secs(60));
    let dir = place();
    let fifo = Fifo::create(dir.join("meet").unwrap()).unwrap();
    let me = test_path!(unrelated_processes_exchange_data_through_a_created_fifo);
    // Two siblings that share nothing but the path; the parent never opens the FIFO.
    let reader = Proc::spawn(child(&me, "reader").env(PATH_ENV, fifo.path())).unwrap();
    let writer = Proc::spawn(child(&me, "writer").env(PATH_ENV, fifo.path())).unwrap();
    writer.expect_success(CHILD_LIMIT);
    reader.expect_success(CHILD_LIMIT);
    drop(fifo);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
