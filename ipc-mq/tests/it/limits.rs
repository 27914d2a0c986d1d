//! Requests over the kernel's limits come back as `LimitExceeded` naming the limit.

use std::time::Duration;

use ipc_mq::{Error, Limit, LimitCheck, Limits, MessageQueue};
use ipc_testkit::{Watchdog, child, posix_name, role, test_path};

use crate::NAME_ENV;

fn expect_limit(r: ipc_mq::Result<MessageQueue>, what: Limit, requested: u64, limit: u64) {
    match r {
        Err(e @ Error::LimitExceeded { .. }) => {
            let Error::LimitExceeded {
                what: w,
                requested: r,
                limit: l,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*w, *r, *l), (what, requested, limit), "{e}");
            let text = e.to_string();
            assert!(
                text.contains(what.name()) && text.contains(&limit.to_string()),
                "{text}"
            );
        }
        other => panic!("expected LimitExceeded({what}), got {other:?}"),
    }
}

#[test]
fn more_messages_or_larger_messages_than_the_system_allows_are_limit_exceeded() {
    let l = Limits::read().unwrap();
    let name = posix_name("lim");
    expect_limit(
        MessageQueue::create(&name, l.msg_max + 1, 64),
        Limit::MsgMax,
        l.msg_max + 1,
        l.msg_max,
    );
    expect_limit(
        MessageQueue::create(&name, 1, l.msgsize_max + 1),
        Limit::MsgsizeMax,
        l.msgsize_max + 1,
        l.msgsize_max,
    );
    // This machine's values, as the issue states them.
    if (l.msg_max, l.msgsize_max) == (10, 8192) {
        expect_limit(MessageQueue::create(&name, 11, 64), Limit::MsgMax, 11, 10);
        expect_limit(
            MessageQueue::create(&name, 1, 8193),
            Limit::MsgsizeMax,
            8193,
            8192,
        );
    }
    // Exactly at the limits is fine.
    drop(MessageQueue::create(&name, l.msg_max, l.msgsize_max).unwrap());
    assert!(matches!(
        MessageQueue::create(&name, 0, 8),
        Err(Error::InvalidAttributes)
    ));
}

#[test]
fn a_privileged_caller_may_opt_out_of_the_check() {
    let l = Limits::read().unwrap();
    let r = MessageQueue::options()
        .max_messages(l.msg_max + 1)
        .message_size(16)
        .limit_check(LimitCheck::Kernel)
        .create(&posix_name("optout"));
    // CAP_SYS_RESOURCE (bit 24) lets the kernel accept more than msg_max; root may lack it
    // (containers often drop it).
    let privileged = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0);
    match r {
        Ok(q) => {
            assert!(privileged);
            assert_eq!(q.attributes().unwrap().max_messages, l.msg_max + 1);
        }
        Err(e) => {
            assert!(!privileged, "{e}");
            assert!(matches!(
                e,
                Error::LimitExceeded {
                    what: Limit::MsgMax,
                    ..
                }
            ));
        }
    }
}

/// In a child: a private IPC namespace (so the queue count starts at zero and nobody else's
/// queues count), a fresh uid (so no other queue is charged to our byte budget), and the
/// given RLIMIT_MSGQUEUE.
fn isolate(rlimit: Option<u64>) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWIPC).expect("unshare(CLONE_NEWIPC)");
    if let Some(bytes) = rlimit {
        let lim = rustix::process::Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        rustix::process::setrlimit(rustix::process::Resource::Msgqueue, lim).unwrap();
    }
    let uid = 200_000 + std::process::id() % 100_000;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).unwrap();
}

#[test]
fn the_rlimit_msgqueue_byte_budget_is_limit_exceeded_before_and_from_the_kernel() {
    let _wd = Watchdog::new("rlimit child", Duration::from_secs(30));
    if role().as_deref() == Some("budget") {
        isolate(Some(1000));
        let l = Limits::read().unwrap();
        assert_eq!(l.rlimit_msgqueue, 1000);
        let base = arg_base();
        // Our own check: one queue of 16 x 64 needs more than 1000 bytes.
        let need = Limits::queue_bytes(16, 64);
        expect_limit(
            MessageQueue::create(&format!("{base}-a"), 10.min(l.msg_max), 100),
            Limit::RlimitMsgqueue,
            Limits::queue_bytes(10.min(l.msg_max), 100),
            1000,
        );
        assert!(need > 1000);
        // The kernel's: each 4 x 64 queue fits alone (640 bytes), the second does not; mq_open
        // says EMFILE, which is translated.
        let first = MessageQueue::create(&format!("{base}-b"), 4, 64).unwrap();
        expect_limit(
            MessageQueue::create(&format!("{base}-c"), 4, 64),
            Limit::RlimitMsgqueue,
            Limits::queue_bytes(4, 64),
            1000,
        );
        drop(first);
        // The budget is back once the first is gone.
        drop(MessageQueue::create(&format!("{base}-d"), 4, 64).unwrap());
        return;
    }
    let test =
        test_path!(the_rlimit_msgqueue_byte_budget_is_limit_exceeded_before_and_from_the_kernel);
    ipc_testkit::Proc::spawn(child(&test, "budget").env(NAME_ENV, posix_name("budget")))
        .unwrap()
        .expect_success(Duration::from_secs(20));
}

fn arg_base() -> String {
    crate::arg_name()
}

#[test]
fn the_queue_count_limit_is_limit_exceeded_naming_queues_max() {
    let _wd = Watchdog::new("queues_max child", Duration::from_secs(60));
    if role().as_deref() == Some("count") {
        // Root passes queues_max (CAP_SYS_RESOURCE); an unprivileged uid in a fresh IPC
        // namespace meets it after exactly queues_max queues.
        isolate(None);
        let l = Limits::read().unwrap();
        let base = arg_base();
        let mut queues = Vec::new();
        let err = loop {
            match MessageQueue::create(&format!("{base}-{}", queues.len()), 1, 1) {
                Ok(q) => queues.push(q),
                Err(e) => break e,
            }
            assert!(queues.len() as u64 <= l.queues_max, "no limit met");
        };
        assert_eq!(queues.len() as u64, l.queues_max);
        expect_limit(Err(err), Limit::QueuesMax, l.queues_max + 1, l.queues_max);
        return;
    }
    let test = test_path!(the_queue_count_limit_is_limit_exceeded_naming_queues_max);
    ipc_testkit::Proc::spawn(child(&test, "count").env(NAME_ENV, posix_name("count")))
        .unwrap()
        .expect_success(Duration::from_secs(50));
}
