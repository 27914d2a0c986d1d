//! iceoryx2's publish-subscribe over shared memory (`ipc::Service`), with its zero-copy API: the
//! publisher loans a sample in the shared data segment and writes the message into it
//! (`loan_slice_uninit` + `write_from_slice`: the one copy every contender's sender makes), the
//! subscriber checks the message in place (`receive` + `payload`), never copying it out.
//!
//! The service is configured for lossless streaming: no safe overflow, the publisher retries
//! until delivered when the subscriber's buffer is full, a subscriber buffer of the same bytes
//! every contender gets (`buf / size` samples, 2 to 65536), no history.
//!
//! The trap: iceoryx2 silently drops samples published before the subscriber is connected. The
//! service counts a subscriber as soon as its port exists, but the subscriber's side of the
//! connection to a publisher made after it exists only once the subscriber updates its
//! connections (its `receive` does, sooner or later). A publisher that sends before that fills
//! the subscriber's queue, and then `send` drops each sample and reports 0 deliveries, with no
//! error (this bench's first version ran into it at message 64, the queue's depth). So both ends
//! connect explicitly before the first message (`connect`, between the control channel's `R`
//! and `C`): the publisher waits (bounded) until the service counts the subscriber and updates
//! its connections, then the subscriber updates its own. And every `send` must report exactly
//! one delivery: anything else fails the run, besides the receiver's sequence check.
//!
//! The receiver polls `receive` (iceoryx2's subscriber has no blocking receive; its own
//! benchmarks poll the same way). Both processes are pinned to their own CPU.

use std::rc::Rc;
use std::time::{Duration, Instant};

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSub;

use super::{OneWay, Result, RoundTrip, Rx, Tx};
use crate::ctl::{Params, Peer, Setup, Spin};
use crate::proto::{Payload, verify};

type Svc = ipc::Service;

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn service_name() -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("ipcrs/peers/{}/{n}", std::process::id())
}

fn depth(p: &Params) -> usize {
    (p.buf / p.size).clamp(2, 1 << 16)
}

fn node() -> Result<Rc<Node<Svc>>> {
    set_log_level(LogLevel::Error);
    Ok(Rc::new(NodeBuilder::new().create::<Svc>()?))
}

fn create(node: &Node<Svc>, name: &str, p: &Params) -> Result<PubSub<Svc, [u8], ()>> {
    Ok(node
        .service_builder(&ServiceName::new(name)?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(depth(p))
        .enable_safe_overflow(false)
        .create()?)
}

fn open(node: &Node<Svc>, name: &str) -> Result<PubSub<Svc, [u8], ()>> {
    Ok(node
        .service_builder(&ServiceName::new(name)?)
        .publish_subscribe::<[u8]>()
        .open()?)
}

fn subscriber(svc: &PubSub<Svc, [u8], ()>, p: &Params) -> Result<Subscriber<Svc, [u8], ()>> {
    Ok(svc.subscriber_builder().buffer_size(depth(p)).create()?)
}

fn publisher(svc: &PubSub<Svc, [u8], ()>, p: &Params) -> Result<Publisher<Svc, [u8], ()>> {
    Ok(svc
        .publisher_builder()
        .initial_max_slice_len(p.size)
        .max_loaned_samples(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()?)
}

/// The sending end. Fields drop in order: the port, then the service, then the node.
pub struct IceTx {
    publisher: Publisher<Svc, [u8], ()>,
    service: PubSub<Svc, [u8], ()>,
    _node: Rc<Node<Svc>>,
    msg: Payload,
}

impl Tx for IceTx {
    /// Waits until the service has its subscriber, then connects to it.
    fn connect(&mut self) -> Result<()> {
        let start = Instant::now();
        while self.service.dynamic_config().number_of_subscribers() < 1 {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("iceoryx2: no subscriber after 10 s".into());
            }
            std::thread::yield_now();
        }
        self.publisher.update_connections()?;
        Ok(())
    }

    #[inline]
    fn send(&mut self, seq: u64) -> Result<()> {
        let sample = self.publisher.loan_slice_uninit(self.msg.len())?;
        let sample = sample.write_from_slice(self.msg.fill(seq));
        let delivered = sample.send()?;
        if delivered != 1 {
            return Err(
                format!("iceoryx2 delivered message {seq} to {delivered} subscribers").into(),
            );
        }
        Ok(())
    }
}

/// The receiving end.
pub struct IceRx {
    subscriber: Subscriber<Svc, [u8], ()>,
    _service: PubSub<Svc, [u8], ()>,
    _node: Rc<Node<Svc>>,
    size: usize,
}

impl Rx for IceRx {
    /// Connects the subscriber to the publisher(s) that exist now.
    fn connect(&mut self) -> Result<()> {
        self.subscriber.update_connections()?;
        Ok(())
    }

    #[inline]
    fn recv(&mut self, seq: u64) -> Result<()> {
        let mut spin = Spin::new();
        loop {
            if let Some(sample) = self.subscriber.receive()? {
                verify(sample.payload(), seq, self.size)?;
                return Ok(());
            }
            spin.wait()?;
        }
    }
}

/// iceoryx2 0.10 publish-subscribe, zero-copy.
#[derive(Debug)]
pub struct Ice;

impl OneWay for Ice {
    const NAME: &'static str = "iceoryx2";
    const KEY: &'static str = "iceoryx2";
    type Tx = IceTx;
    type Rx = IceRx;

    fn rx(p: &Params, peer: &mut Peer) -> Result<IceRx> {
        let node = node()?;
        let name = service_name();
        let service = create(&node, &name, p)?;
        let subscriber = subscriber(&service, p)?;
        peer.setup(&name, &[])?;
        Ok(IceRx {
            subscriber,
            _service: service,
            _node: node,
            size: p.size,
        })
    }

    fn tx(p: &Params, setup: Setup) -> Result<IceTx> {
        let node = node()?;
        let service = open(&node, &setup.text)?;
        let publisher = publisher(&service, p)?;
        Ok(IceTx {
            publisher,
            service,
            _node: node,
            msg: Payload::new(p.size),
        })
    }
}

impl RoundTrip for Ice {
    const NAME: &'static str = "iceoryx2";
    const KEY: &'static str = "iceoryx2";
    type Tx = IceTx;
    type Rx = IceRx;

    fn parent(p: &Params, peer: &mut Peer) -> Result<(IceTx, IceRx)> {
        let (ping, pong) = (service_name(), service_name());
        let node = node()?;
        let a2b = create(&node, &ping, p)?;
        let b2a = create(&node, &pong, p)?;
        let subscriber = subscriber(&b2a, p)?;
        let publisher = publisher(&a2b, p)?;
        peer.setup(&format!("{ping} {pong}"), &[])?;
        Ok((
            IceTx {
                publisher,
                service: a2b,
                _node: node.clone(),
                msg: Payload::new(p.size),
            },
            IceRx {
                subscriber,
                _service: b2a,
                _node: node,
                size: p.size,
            },
        ))
    }

    fn child(p: &Params, setup: Setup) -> Result<(IceTx, IceRx)> {
        let (ping, pong) = setup.text.split_once(' ').ok_or("two names")?;
        let node = node()?;
        let a2b = open(&node, ping)?;
        let b2a = open(&node, pong)?;
        let subscriber = subscriber(&a2b, p)?;
        let publisher = publisher(&b2a, p)?;
        Ok((
            IceTx {
                publisher,
                service: b2a,
                _node: node.clone(),
                msg: Payload::new(p.size),
            },
            IceRx {
                subscriber,
                _service: a2b,
                _node: node,
                size: p.size,
            },
        ))
    }
}
