//! Opening a TCP connection to a broker, with a bounded wait and a short
//! memory of failures so that a dead broker costs one timeout, not one per
//! request.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::cluster::Cluster;

pub fn connect(addr: &str, timeout: Duration, cluster: &Cluster) -> io::Result<TcpStream> {
    if cluster.recently_unreachable(addr) {
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("{addr} was unreachable moments ago")));
    }
    let result = connect_any(addr, timeout);
    if result.is_err() {
        cluster.mark_unreachable(addr);
    }
    result
}

fn connect_any(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
    for sock_addr in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sock_addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
