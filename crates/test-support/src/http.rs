//! Just enough HTTP/1.0 over loopback to ask a server whether it is up or
//! to poke an admin endpoint, without an HTTP client dependency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Sends `METHOD path` to 127.0.0.1:`port` with an empty body; true when
/// the answer's status is 200. Any failure (refused, timeout, other
/// status) is false.
pub fn status_ok(port: u16, method: &str, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.0 200") || head[..got].starts_with(b"HTTP/1.1 200")
}
