//! The runtime-agnostic recipe (the README's): non-blocking descriptors, `AsFd` into a plain
//! edge-triggered `epoll` loop, and the `try_` calls until `WouldBlock`.

use std::collections::VecDeque;
use std::time::Duration;

use ipc_mq::{Access, Error, MessageQueue};
use ipc_testkit::{Proc, SplitMix64, Watchdog, child, fnv1a64, posix_name, role, test_path};
use rustix::buffer::spare_capacity;
use rustix::event::epoll;

use crate::{NAME_ENV, arg_name};

const N: u32 = 3000;
const SIZE: usize = 96;

fn message(rng: &mut SplitMix64, seq: u32) -> Vec<u8> {
    let len = rng.range(12, SIZE as u64) as usize;
    let mut m = vec![0; len];
    m[..4].copy_from_slice(&seq.to_le_bytes());
    rng.fill(&mut m[4..len - 8]);
    let sum = fnv1a64(&m[..len - 8]);
    m[len - 8..].copy_from_slice(&sum.to_le_bytes());
    m
}

fn check(m: &[u8]) -> u32 {
    let (body, sum) = m.split_at(m.len() - 8);
    assert_eq!(fnv1a64(body), u64::from_le_bytes(sum.try_into().unwrap()));
    u32::from_le_bytes(m[..4].try_into().unwrap())
}

#[test]
fn a_plain_edge_triggered_epoll_loop_relays_every_message_between_two_processes() {
    let _wd = Watchdog::new("epoll relay", Duration::from_secs(120));
    match role().as_deref() {
        Some("producer") => {
            let q = MessageQueue::open(&arg_name(), Access::Send).unwrap();
            let mut rng = SplitMix64::new(21);
            for seq in 0..N {
                q.send(&message(&mut rng, seq), seq % 4).unwrap();
            }
            return;
        }
        Some("consumer") => {
            let q = MessageQueue::open(&arg_name(), Access::Receive).unwrap();
            let mut buf = [0; SIZE];
            let mut seen = vec![false; N as usize];
            for _ in 0..N {
                let (n, prio) = q.receive(&mut buf).unwrap();
                // Priorities ride along (and reorder what waits in the queues).
                let seq = check(&buf[..n]);
                assert_eq!(prio, seq % 4);
                assert!(
                    !std::mem::replace(&mut seen[seq as usize], true),
                    "{seq} twice"
                );
            }
            return;
        }
        _ => {}
    }
    let test =
        test_path!(a_plain_edge_triggered_epoll_loop_relays_every_message_between_two_processes);
    let (a, b) = (posix_name("ep-in"), posix_name("ep-out"));
    // Non-blocking descriptors: no call in the loop ever waits (even a plain `receive`).
    let opts = MessageQueue::options()
        .max_messages(4)
        .message_size(SIZE as u64)
        .nonblocking(true);
    let inbox = opts.access(Access::Receive).create(&a).unwrap();
    let outbox = opts.access(Access::Send).create(&b).unwrap();
    let producer = Proc::spawn(child(&test, "producer").env(NAME_ENV, &a)).unwrap();
    let consumer = Proc::spawn(child(&test, "consumer").env(NAME_ENV, &b)).unwrap();

    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
    let (flags_in, flags_out) = (
        epoll::EventFlags::IN | epoll::EventFlags::ET,
        epoll::EventFlags::OUT | epoll::EventFlags::ET,
    );
    epoll::add(&ep, &inbox, epoll::EventData::new_u64(0), flags_in).unwrap();
    epoll::add(&ep, &outbox, epoll::EventData::new_u64(1), flags_out).unwrap();
    // Edge-triggered: an event says "something changed"; a side stays ready until a call
    // says WouldBlock.
    let (mut readable, mut writable) = (false, false);
    let mut held: VecDeque<(Vec<u8>, u32)> = VecDeque::new();
    let (mut relayed, mut waits) = (0u32, 0u32);
    let mut events = Vec::with_capacity(4);
    let mut buf = [0; SIZE];
    while relayed < N {
        let mut progress = false;
        if readable && held.len() < 8 {
            match inbox.receive(&mut buf) {
                Ok((n, prio)) => {
                    held.push_back((buf[..n].to_vec(), prio));
                    progress = true;
                }
                Err(Error::WouldBlock) => readable = false,
                Err(e) => panic!("{e}"),
            }
        }
        if writable {
            if let Some((m, prio)) = held.front() {
                match outbox.try_send(m, *prio) {
                    Ok(()) => {
                        held.pop_front();
                        relayed += 1;
                        progress = true;
                    }
                    Err(Error::WouldBlock) => writable = false,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        if progress {
            continue;
        }
        let limit = rustix::event::Timespec {
            tv_sec: 60,
            tv_nsec: 0,
        };
        epoll::wait(&ep, spare_capacity(&mut events), Some(&limit)).unwrap();
        assert!(!events.is_empty(), "no event within 60 s");
        waits += 1;
        for ev in events.drain(..) {
            let (flags, which) = (ev.flags, ev.data.u64()); // copied out of the packed struct
            match which {
                0 => readable |= flags.contains(epoll::EventFlags::IN),
                _ => writable |= flags.contains(epoll::EventFlags::OUT),
            }
        }
    }
    producer.expect_success(Duration::from_secs(60));
    consumer.expect_success(Duration::from_secs(60));
    assert!(inbox.is_empty().unwrap() && outbox.is_empty().unwrap());
    assert!(waits > 0, "the loop waited for events");
}
