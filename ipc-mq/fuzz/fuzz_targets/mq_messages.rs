//! A peer-controlled sequence of messages (lengths, bytes, priorities; System V types) sent
//! into a real POSIX queue and a real System V queue, and taken out through every receive form
//! with buffers of every size. A model of each queue says what must come out: the bytes,
//! lengths, priorities and types received are exactly what was sent; a buffer that is too
//! small is the typed error and leaves the message queued; nothing panics.
//!
//! One queue of each kind serves the whole fuzzing process (made on the first input, emptied
//! after each one, removed at exit and on a finding).
#![no_main]

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use ipc_mq::{Error, Key, MessageQueue, Select, SysvMessage, SysvQueue};

const MAXMSG: u64 = 8;
const MSGSIZE: usize = 512;

struct Queues {
    posix: MessageQueue,
    sysv: SysvQueue,
    /// msg_qbytes of the System V queue.
    qbytes: usize,
    /// kernel.msgmax.
    msgmax: usize,
}

static QUEUES: OnceLock<Queues> = OnceLock::new();
static NAME: OnceLock<String> = OnceLock::new();

extern "C" fn remove_at_exit() {
    if let Some(name) = NAME.get() {
        let _ = ipc_mq::unlink(name);
    }
    if let Some(q) = QUEUES.get() {
        let _ = ipc_mq::sysv::remove(q.sysv.id());
    }
}

fn queues() -> &'static Queues {
    QUEUES.get_or_init(|| {
        let name = NAME.get_or_init(|| format!("/ipcrs-fuzz-mq-{}", std::process::id()));
        let _ = ipc_mq::unlink(name);
        let posix = MessageQueue::create(name, MAXMSG, MSGSIZE as u64).expect("POSIX queue");
        // A workspace key (0x4950xxxx), so `cargo xtask clean` finds it after a crash.
        let sysv = (0..64)
            .find_map(|i| {
                SysvQueue::create(Key::new(0x4950_f000 | ((std::process::id() as i32 + i) & 0xfff)))
                    .ok()
            })
            .expect("System V queue");
        // SAFETY: `remove_at_exit` is an `extern "C" fn()` that only removes the two queues.
        unsafe { libc::atexit(remove_at_exit) };
        // A finding ends the process through a panic (libFuzzer then aborts): remove them then.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            remove_at_exit();
            previous(info);
        }));
        let qbytes = sysv.stats().expect("IPC_STAT").max_bytes as usize;
        let msgmax = std::fs::read_to_string("/proc/sys/kernel/msgmax")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(8192);
        Queues {
            posix,
            sysv,
            qbytes,
            msgmax,
        }
    })
}

/// Reads the input as a stream of small numbers.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        // Short input: pad with a pattern, so long messages still come from the input's length.
        let mut v = a.to_vec();
        v.extend((v.len()..n).map(|i| i as u8));
        v
    }
}

/// The POSIX model: the most urgent first, oldest first within a priority.
#[derive(Default)]
struct PosixModel(Vec<(u32, u64, Vec<u8>)>, u64);

impl PosixModel {
    fn push(&mut self, prio: u32, m: Vec<u8>) {
        self.1 += 1;
        self.0.push((prio, self.1, m));
    }
    fn pop(&mut self) -> Option<(Vec<u8>, u32)> {
        let i = (0..self.0.len()).max_by_key(|&i| (self.0[i].0, std::cmp::Reverse(self.0[i].1)))?;
        let (p, _, m) = self.0.remove(i);
        Some((m, p))
    }
    fn peek_len(&self) -> usize {
        self.0.len()
    }
}

/// The System V model: in order of arrival; selection by type.
#[derive(Default)]
struct SysvModel(VecDeque<(i64, Vec<u8>)>);

impl SysvModel {
    fn bytes(&self) -> usize {
        self.0.iter().map(|(_, m)| m.len()).sum()
    }
    fn find(&self, sel: Select) -> Option<usize> {
        match sel {
            Select::Any => (!self.0.is_empty()).then_some(0),
            Select::Type(t) => self.0.iter().position(|(mt, _)| *mt == t),
            Select::UpTo(t) => {
                let low = self.0.iter().filter(|(mt, _)| *mt <= t).map(|(mt, _)| *mt).min()?;
                self.0.iter().position(|(mt, _)| *mt == low)
            }
        }
    }
}

fn select(code: u8, t: i64) -> Select {
    match code % 3 {
        0 => Select::Any,
        1 => Select::Type(t),
        _ => Select::UpTo(t),
    }
}

/// A buffer length around the interesting sizes: 0, small, the message size, one over, ...
fn buf_len(code: u8, around: usize) -> usize {
    match code % 6 {
        0 => 0,
        1 => usize::from(code) % 64,
        2 => around.saturating_sub(1),
        3 => around,
        4 => around + 1,
        _ => around + usize::from(code),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let qs = queues();
    let mut input = Input(data);
    let mut pm = PosixModel::default();
    let mut sm = SysvModel::default();
    while let Some(op) = input.byte() {
        match op % 8 {
            // POSIX send: length, priority and bytes from the peer.
            0 | 1 => {
                let (Some(len), Some(prio)) = (input.u16(), input.u16()) else { break };
                let len = usize::from(len) % (MSGSIZE + 64);
                let prio = u32::from(prio);
                let msg = input.bytes(len);
                let r = qs.posix.try_send(&msg, prio);
                if prio > ipc_mq::MAX_PRIORITY {
                    assert!(matches!(r, Err(Error::InvalidPriority { .. })), "{r:?}");
                } else if len > MSGSIZE {
                    assert!(
                        matches!(r, Err(Error::MessageTooLarge { len: l, max: MSGSIZE }) if l == len),
                        "{r:?}"
                    );
                } else if pm.peek_len() as u64 == MAXMSG {
                    assert!(matches!(r, Err(Error::WouldBlock)), "{r:?}");
                } else {
                    r.expect("POSIX send");
                    pm.push(prio, msg);
                }
            }
            // POSIX receive, through one of its forms.
            2 | 3 => {
                let Some(form) = input.byte() else { break };
                let expected = if pm.peek_len() == 0 { None } else { Some(()) };
                match form % 4 {
                    0 | 1 => {
                        let mut buf = vec![0xa5; buf_len(form / 4, MSGSIZE)];
                        let r = if form % 4 == 0 {
                            qs.posix.try_receive(&mut buf)
                        } else {
                            qs.posix.receive_timeout(&mut buf, Duration::ZERO)
                        };
                        if buf.len() < MSGSIZE {
                            assert!(
                                matches!(r, Err(Error::BufferTooSmall { needed: Some(MSGSIZE), .. })),
                                "{r:?}"
                            );
                        } else if expected.is_none() {
                            assert!(
                                matches!(r, Err(Error::WouldBlock | Error::TimedOut)),
                                "{r:?}"
                            );
                        } else {
                            let (n, p) = r.expect("POSIX receive");
                            let (m, mp) = pm.pop().expect("model");
                            assert_eq!((&buf[..n], p), (m.as_slice(), mp));
                            assert!(buf[n..].iter().all(|&b| b == 0xa5), "wrote past the message");
                        }
                    }
                    _ => {
                        let r = if form % 4 == 2 {
                            qs.posix.try_receive_vec()
                        } else {
                            qs.posix.receive_vec_timeout(Duration::ZERO)
                        };
                        match pm.pop() {
                            None => assert!(
                                matches!(r, Err(Error::WouldBlock | Error::TimedOut)),
                                "{r:?}"
                            ),
                            Some((m, p)) => assert_eq!(r.expect("POSIX receive_vec"), (m, p)),
                        }
                    }
                }
            }
            // System V send: type, length and bytes from the peer.
            4 | 5 => {
                let (Some(t), Some(len)) = (input.u16(), input.u16()) else { break };
                let mtype = i64::from(t as i16);
                let len = usize::from(len) % (qs.msgmax.min(4096) + 64);
                let msg = input.bytes(len);
                let as_message = op % 2 == 1;
                let r = if as_message {
                    let mut m = SysvMessage::with_capacity(0);
                    m.set_mtype(mtype);
                    m.set_text(&msg);
                    qs.sysv.try_send_message(&m)
                } else {
                    qs.sysv.try_send(mtype, &msg)
                };
                if mtype <= 0 {
                    assert!(matches!(r, Err(Error::InvalidMessageType { .. })), "{r:?}");
                } else if len > qs.msgmax {
                    assert!(matches!(r, Err(Error::MessageTooLarge { .. })), "{r:?}");
                } else if sm.bytes() + len > qs.qbytes || sm.0.len() + 1 > qs.qbytes {
                    assert!(matches!(r, Err(Error::WouldBlock | Error::MessageTooLarge { .. })), "{r:?}");
                } else {
                    r.expect("System V send");
                    sm.0.push_back((mtype, msg));
                }
            }
            // System V receive, through one of its forms and selections.
            _ => {
                let (Some(form), Some(t)) = (input.byte(), input.u16()) else { break };
                let t = i64::from(t as i16);
                let sel = select(form, t);
                let bad_type = !matches!(sel, Select::Any) && t <= 0;
                let at = if bad_type { None } else { sm.find(sel) };
                let want_len = at.map_or(0, |i| sm.0[i].1.len());
                match (form / 3) % 5 {
                    // Into a buffer, a message buffer: sizes around the message's length.
                    k @ (0..=2) => {
                        let cap = buf_len(form / 15, want_len);
                        let (r, got): (ipc_mq::Result<(usize, i64)>, Vec<u8>) = if k == 2 {
                            let mut m = SysvMessage::with_capacity(cap);
                            let r = qs.sysv.try_receive_message(&mut m, sel).map(|()| (m.text().len(), m.mtype()));
                            (r, m.text().to_vec())
                        } else {
                            let mut buf = vec![0x5a; cap];
                            let r = if k == 0 {
                                qs.sysv.try_receive(&mut buf, sel)
                            } else {
                                qs.sysv.receive_timeout(&mut buf, sel, Duration::ZERO)
                            };
                            if let Ok((n, _)) = r {
                                assert!(n <= cap && buf[n..].iter().all(|&b| b == 0x5a));
                                buf.truncate(n);
                            }
                            (r, buf)
                        };
                        if bad_type {
                            assert!(matches!(r, Err(Error::InvalidMessageType { .. })), "{r:?}");
                        } else if at.is_none() {
                            assert!(matches!(r, Err(Error::WouldBlock | Error::TimedOut)), "{r:?}");
                        } else if cap < want_len {
                            assert!(
                                matches!(r, Err(Error::BufferTooSmall { len, needed: None }) if len == cap),
                                "{r:?}"
                            );
                        } else {
                            let (n, mt) = r.expect("System V receive");
                            let (emt, m) = sm.0.remove(at.unwrap()).unwrap();
                            assert_eq!((n, mt, got.as_slice()), (m.len(), emt, m.as_slice()));
                        }
                    }
                    // Into a Vec, sized by the crate.
                    _ => {
                        let r = if form % 2 == 0 {
                            qs.sysv.try_receive_vec(sel)
                        } else {
                            qs.sysv.receive_vec_timeout(sel, Duration::ZERO)
                        };
                        if bad_type {
                            assert!(matches!(r, Err(Error::InvalidMessageType { .. })), "{r:?}");
                        } else if let Some(i) = at {
                            let (emt, m) = sm.0.remove(i).unwrap();
                            assert_eq!(r.expect("System V receive_vec"), (m, emt));
                        } else {
                            assert!(matches!(r, Err(Error::WouldBlock | Error::TimedOut)), "{r:?}");
                        }
                    }
                }
            }
        }
    }
    // Empty both queues, checking the rest against the models, for the next input.
    while let Some((m, p)) = pm.pop() {
        assert_eq!(qs.posix.try_receive_vec().expect("POSIX drain"), (m, p));
    }
    assert!(matches!(qs.posix.try_receive_vec(), Err(Error::WouldBlock)));
    while let Some((t, m)) = sm.0.pop_front() {
        assert_eq!(qs.sysv.try_receive_vec(Select::Any).expect("System V drain"), (m, t));
    }
    assert!(matches!(qs.sysv.try_receive_vec(Select::Any), Err(Error::WouldBlock)));
});
