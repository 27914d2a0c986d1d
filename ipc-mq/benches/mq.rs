//! ipc-mq benchmark (being written).

fn main() {}
