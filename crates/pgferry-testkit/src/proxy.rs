//! A TCP proxy on loopback for network-fault tests: it forwards to a server's port, and
//! can freeze every connection it carries, the way a cut network or a half-open TCP
//! connection looks from both ends: nothing arrives, nothing is closed, no error is seen.
//! Frozen connections stay dead; connections made while frozen wait until [`Proxy::thaw`].

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::cluster::ClusterError;

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Connections of an older generation than this are frozen for good.
    generation: AtomicU64,
    /// New connections wait while this is set.
    frozen: AtomicBool,
    closed: AtomicBool,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `127.0.0.1:to`.
    pub fn start(to: u16) -> Result<Proxy, ClusterError> {
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| ClusterError::Io { context, source }
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding the proxy"))?;
        let port = listener
            .local_addr()
            .map_err(io("reading the proxy's port"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(io("setting up the proxy"))?;
        let state = Arc::new(State::default());
        let accepting = state.clone();
        std::thread::spawn(move || {
            while !accepting.closed.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let state = accepting.clone();
                        std::thread::spawn(move || connect(client, to, state));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Proxy { port, state })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes every connection open now, for good, and holds new ones until `thaw`.
    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::Release);
        self.state.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Lets new connections through again; the frozen ones stay frozen.
    pub fn thaw(&self) {
        self.state.frozen.store(false, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Release);
        self.state.generation.fetch_add(1, Ordering::AcqRel);
    }
}

fn connect(client: TcpStream, to: u16, state: Arc<State>) {
    // Accepted from a non-blocking listener, a socket may be non-blocking too; the pumps
    // block (with a read timeout), or a full buffer would look like a closed connection.
    if client.set_nonblocking(false).is_err() {
        return;
    }
    while state.frozen.load(Ordering::Acquire) && !state.closed.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let generation = state.generation.load(Ordering::Acquire);
    let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
        return;
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let s = state.clone();
    std::thread::spawn(move || pump(client2, server2, s, generation));
    pump(server, client, state, generation);
}

/// Copies `from` to `to` until either side closes, or, once frozen, holds both open and
/// silent until the proxy is dropped.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<State>, generation: u64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.generation.load(Ordering::Acquire) != generation {
            // Frozen: read nothing, write nothing, close nothing.
            while !state.closed.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
            }
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
