//! A TCP proxy for network fault tests: it forwards a local port to a target with a delay (and
//! jitter) per direction, and on command cuts the traffic without closing anything, lets it
//! through again, or resets every connection.
//!
//! - Delay: each chunk read from one side is written to the other side after its direction's
//!   delay plus a uniform jitter in `[-jitter, +jitter]`, never before an earlier chunk of the
//!   same direction (order is kept; jitter only stretches gaps).
//! - Cut ([`Proxy::cut`]): nothing is forwarded in either direction and no socket is closed: a
//!   silent black hole. [`Cut::Hold`] holds the bytes and delivers them after the heal, as TCP
//!   does when its retransmissions get through after a short outage. [`Cut::Drop`] loses them, and
//!   a connection that lost bytes stays silent for good: half-open, as when the far end or a
//!   middlebox forgot the connection. Connections opened during a cut are accepted but reach the
//!   target only after the heal (a connect that hangs).
//! - Heal ([`Proxy::heal`]): traffic flows again; new connections work in both modes.
//! - Reset ([`Proxy::reset_all`]): every open connection is closed with a TCP reset on both sides.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What a cut does with the bytes sent while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Held, and delivered in order after the heal.
    Hold,
    /// Lost; a connection that lost bytes never forwards anything again (half-open).
    Drop,
}

/// The switches, watched by every connection.
#[derive(Debug, Clone, Copy, Default)]
struct Net {
    cut: Option<Cut>,
    /// Incremented by every [`Proxy::reset_all`].
    resets: u64,
}

/// One direction's delay: base and jitter.
type Delay = (Duration, Duration);

struct Inner {
    target: SocketAddr,
    /// Client to target, target to client.
    delays: Mutex<[Delay; 2]>,
    net: watch::Sender<Net>,
    rng: AtomicU64,
    accepted: AtomicU64,
}

impl Inner {
    /// A uniform sample in `[base - jitter, base + jitter]` for direction `dir`.
    fn sample(&self, dir: usize) -> Duration {
        let (base, jitter) = self.delays.lock().expect("delays poisoned")[dir];
        if jitter.is_zero() {
            return base;
        }
        // xorshift64*: good enough to spread delays.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11; // 53 bits
        let unit = r as f64 / (1u64 << 53) as f64; // [0, 1)
        let j = jitter.as_secs_f64() * (2.0 * unit - 1.0);
        Duration::from_secs_f64((base.as_secs_f64() + j).max(0.0))
    }
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`, without delay until
    /// [`Proxy::set_delay`].
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        let inner = Arc::new(Inner {
            target,
            delays: Mutex::new([(Duration::ZERO, Duration::ZERO); 2]),
            net: watch::Sender::new(Net::default()),
            rng: AtomicU64::new(seed),
            accepted: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&inner)));
        Ok(Self { addr, inner, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://<addr>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Connections accepted so far (a reconnect shows as one more).
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// The same delay in both directions: `one_way` ± `jitter` per chunk. A round trip then takes
    /// `2 × one_way` ± `2 × jitter`. Applies to chunks read from now on.
    pub fn set_delay(&self, one_way: Duration, jitter: Duration) {
        self.set_delays((one_way, jitter), (one_way, jitter));
    }

    /// Delay and jitter of each direction: client to target, target to client.
    pub fn set_delays(&self, up: (Duration, Duration), down: (Duration, Duration)) {
        *self.inner.delays.lock().expect("delays poisoned") = [up, down];
    }

    /// Stops forwarding in both directions, closing nothing; see [`Cut`].
    pub fn cut(&self, how: Cut) {
        self.inner.net.send_modify(|n| n.cut = Some(how));
    }

    /// Lets traffic through again.
    pub fn heal(&self) {
        self.inner.net.send_modify(|n| n.cut = None);
    }

    /// Closes every open connection with a TCP reset, on both sides. New connections work (or
    /// wait for the heal, during a cut).
    pub fn reset_all(&self) {
        self.inner.net.send_modify(|n| n.resets += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                inner.accepted.fetch_add(1, Ordering::Relaxed);
                conns.spawn(serve(client, Arc::clone(&inner)));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Waits until no cut is on; false if a reset came first.
async fn wait_healed(net: &mut watch::Receiver<Net>, resets: u64) -> bool {
    loop {
        let n = *net.borrow_and_update();
        if n.resets != resets {
            return false;
        }
        if n.cut.is_none() {
            return true;
        }
        if net.changed().await.is_err() {
            return false;
        }
    }
}

/// Waits for the next reset.
async fn reset_signal(mut net: watch::Receiver<Net>, resets: u64) {
    loop {
        if net.borrow_and_update().resets != resets {
            return;
        }
        if net.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn serve(mut client: TcpStream, inner: Arc<Inner>) {
    let mut net = inner.net.subscribe();
    let resets = net.borrow().resets;
    let _ = client.set_nodelay(true);
    // Opened during a cut: reaches the target after the heal.
    if !wait_healed(&mut net, resets).await {
        let _ = client.set_zero_linger();
        return;
    }
    let Ok(mut server) = TcpStream::connect(inner.target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = server.set_nodelay(true);
    let dead = AtomicBool::new(false);
    let reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        let pumps = async {
            tokio::join!(
                read_side(cr, up_tx, &inner, 0),
                write_side(sw, up_rx, inner.net.subscribe(), &dead),
                read_side(sr, down_tx, &inner, 1),
                write_side(cw, down_rx, inner.net.subscribe(), &dead),
            )
        };
        tokio::select! {
            _ = pumps => false,
            () = reset_signal(net, resets) => true,
        }
    };
    if reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// A chunk and when to deliver it; `None` is the end of the stream.
type Chunk = Option<(Instant, Vec<u8>)>;

/// Reads chunks and stamps each with its delivery time (never before the previous one's).
async fn read_side<R: AsyncReadExt + Unpin>(
    mut rd: R,
    tx: mpsc::UnboundedSender<Chunk>,
    inner: &Inner,
    dir: usize,
) {
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(None);
                return;
            }
            Ok(n) => n,
        };
        let at = (Instant::now() + inner.sample(dir)).max(last);
        last = at;
        if tx.send(Some((at, buf[..n].to_vec()))).is_err() {
            return;
        }
    }
}

/// Writes chunks at their delivery time, holding or dropping them during a cut.
async fn write_side<W: AsyncWriteExt + Unpin>(
    mut wr: W,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    mut net: watch::Receiver<Net>,
    dead: &AtomicBool,
) {
    while let Some(chunk) = rx.recv().await {
        let Some((at, bytes)) = chunk else {
            if !dead.load(Ordering::Relaxed) {
                let _ = wr.shutdown().await;
            }
            return;
        };
        tokio::time::sleep_until(at).await;
        loop {
            if dead.load(Ordering::Relaxed) {
                break;
            }
            let cut = net.borrow_and_update().cut;
            match cut {
                None => {
                    if wr.write_all(&bytes).await.is_err() {
                        return;
                    }
                    break;
                }
                Some(Cut::Drop) => {
                    dead.store(true, Ordering::Relaxed);
                    break;
                }
                Some(Cut::Hold) => {
                    if net.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
