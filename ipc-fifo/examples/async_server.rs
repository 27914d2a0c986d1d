//! A FIFO server on a one-thread tokio runtime: a keep-alive reader of records, and clients
//! whose opens wait for it.

use ipc_fifo::{AsyncFifoWriter, AsyncRecordReader, Fifo, FifoReader, KeepAlive, PrivateDir};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PrivateDir::new("myapp-async")?;
    let fifo = Fifo::create(dir.join("requests")?)?;

    // The server: a keep-alive reader of whole records (no end-of-file between clients).
    let reader = FifoReader::options()
        .keep_alive(KeepAlive::On)
        .open_async(fifo.path())
        .await?;
    let mut requests = AsyncRecordReader::new(reader);

    // Three clients: tasks here, other processes that know the path in real life. Their
    // opens wait for the server's reader without blocking this one-thread runtime.
    for id in 0..3u8 {
        let path = fifo.path().to_owned();
        tokio::spawn(async move {
            let mut client = AsyncFifoWriter::open_timeout(&path, Duration::from_secs(5)).await?;
            client.write_record(&[b'c', b'0' + id]).await
        });
    }

    let mut seen = Vec::new();
    while seen.len() < 3 {
        // Cancellation-safe: a receive cut short by the timeout loses nothing.
        let Ok(request) = tokio::time::timeout(Duration::from_secs(5), requests.recv()).await
        else {
            return Err("no request within 5 s".into());
        };
        seen.push(
            request?
                .expect("a keep-alive reader sees no end-of-file")
                .to_vec(),
        );
    }
    seen.sort();
    assert_eq!(seen, [b"c0", b"c1", b"c2"]);
    Ok(())
}
