//! Integration tests of ipc-mq: real queues, real processes.

mod posix;
