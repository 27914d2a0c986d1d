//! A ring between two tasks on a one-thread tokio runtime — in real life two processes that
//! know the segment's name: the named segment and its named doorbell, a writer that waits
//! for room and a reader that waits for messages, neither blocking the runtime.

use std::time::Duration;

use ipc_shm::{AsyncRingReader, AsyncRingWriter, Doorbell, Ring, Shm};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("/myapp-async-{}", std::process::id());
    let size = Ring::segment_size(1 << 16)?;

    // The server: the segment and its doorbell (two FIFOs beside it in /dev/shm), both
    // removed when their owners are dropped.
    let ring = Ring::create(Shm::create(&name, size)?)?.with_doorbell(Doorbell::create(&name)?);
    let mut rx = AsyncRingReader::new(ring.into_reader()?)?;

    // The client opens both by name.
    let ring = Ring::open(Shm::open(&name, size)?)?.with_doorbell(Doorbell::open(&name)?);
    let mut tx = AsyncRingWriter::new(ring.into_writer()?)?;
    let client = tokio::spawn(async move {
        for i in 0..10_000u32 {
            tx.send(&i.to_le_bytes().repeat(25)).await?; // waits while the ring is full
        }
        Ok::<(), ipc_shm::Error>(())
    });

    let mut buf = [0u8; 100];
    for i in 0..10_000u32 {
        // Cancellation-safe: a receive cut short by the timeout loses no message.
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf)).await??;
        assert_eq!(&buf[..n], &i.to_le_bytes().repeat(25)[..]);
    }
    client.await??;
    Ok(())
}
