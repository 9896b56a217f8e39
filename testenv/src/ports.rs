//! Free loopback ports. The kernel hands out a free port for a socket bound to port 0; the
//! socket is closed before the component binds it, so another process can in rare cases
//! take it in between: the caller retries the whole start with fresh ports when a
//! component reports "address already in use".

use std::net::TcpListener;

use crate::error::{Result, io};

pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    // Hold all listeners until every port is known, so the N ports differ.
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(io("cannot find a free loopback port"))?;
        *port = listener
            .local_addr()
            .map_err(io("cannot read a loopback port"))?
            .port();
        listeners.push(listener);
    }
    Ok(ports)
}
