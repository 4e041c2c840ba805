//! vimigrate-labapp: the web workload of the vimigrate provider lab.
//!
//! A small HTTP/1.1 server (std only) that counts visits in Redis:
//! - `GET /`        increments `visits` (Redis INCR) and answers `visits=N host=HOSTNAME`
//! - `GET /healthz` answers `ok`
//! - `GET /stats`   answers JSON with the Redis address and peer in use and how
//!   many connections to Redis were made so far
//!
//! It keeps ONE persistent TCP connection to Redis shared by all requests, so
//! a migration test can watch what happens to an established connection. On
//! any error it reconnects, re-reading its configuration first (so the Redis
//! address can be changed after a migration), and retries the request once.
//!
//! Configuration:
//! - `WEB_PORT`   listen port on 0.0.0.0 (default 8080)
//! - `REDIS_ADDR` Redis `host:port` (default `redis:6379`)
//! - `WEB_CONFIG` config file (default `/etc/web/web.conf`); a line
//!   `redis=host:port` in it overrides `REDIS_ADDR`
//! - `MEM_MIB`    touch this many MiB of memory at start and keep it (the
//!   memory-size workload of migration benchmarks and tests)
//! - `MEM_KIND`   what that memory holds: `random` (the default, incompressible)
//!   or `text` (JSON-like records, as an application's heap holds: compressible)
//! - `DIRTY_PERCENT` rewrite this percentage of that memory every second, spread
//!   over the second (the workload pre-copy has to chase)
//! - `WORKER_KEY` also run a worker: its own persistent connection to Redis,
//!   named `worker` (`CLIENT SETNAME`, so that its identity shows in Redis's
//!   `CLIENT LIST`), doing `INCR <key>` every 10 ms; on an error it reconnects
//!   and goes on (a migration test sees a new client id)
//! - `THP`        `never`: no transparent huge pages for this process
//!   (`prctl(PR_SET_THP_DISABLE)`, as Redis's operators are told to do): with
//!   them a kernel tracks dirty memory per 2 MiB page, so scattered writes
//!   dirty far more than they touch

mod http;
mod resp;

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::{env, fs, thread};

use resp::Value;

const DEFAULT_PORT: u16 = 8080;
const DEFAULT_REDIS: &str = "redis:6379";
const DEFAULT_CONFIG: &str = "/etc/web/web.conf";
/// Bounds every Redis connect, read and write, so a vanished Redis turns into
/// a 503 in seconds instead of a hung request.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Extracts the `redis=host:port` setting from a config file's text.
fn parse_config(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "redis")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The Redis address to use now: config file first, then `REDIS_ADDR`, then
/// the default. Read afresh on every (re)connect.
fn redis_addr() -> String {
    let path = env::var("WEB_CONFIG").unwrap_or_else(|_| DEFAULT_CONFIG.to_string());
    fs::read_to_string(&path)
        .ok()
        .and_then(|t| parse_config(&t))
        .or_else(|| env::var("REDIS_ADDR").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_REDIS.to_string())
}

/// The UTS hostname of the container (the kernel's view, so it is right even
/// when the `HOSTNAME` variable is not).
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// An open connection to Redis.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    peer: SocketAddr,
}

/// The single shared Redis client and its counters.
struct Redis {
    conn: Option<Conn>,
    /// The configured `host:port` last used to connect.
    addr: String,
    /// Successful connections made so far (the first one included).
    connects: u64,
}

impl Redis {
    fn new() -> Self {
        Redis { conn: None, addr: redis_addr(), connects: 0 }
    }

    /// Drops any current connection, re-reads the configuration and connects
    /// to the first address the name resolves to that accepts.
    fn connect(&mut self) -> io::Result<()> {
        self.conn = None;
        self.addr = redis_addr();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for sa in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, REDIS_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(REDIS_TIMEOUT))?;
                    stream.set_write_timeout(Some(REDIS_TIMEOUT))?;
                    stream.set_nodelay(true)?;
                    let reader = BufReader::new(stream.try_clone()?);
                    self.conn = Some(Conn { reader, writer: stream, peer: sa });
                    self.connects += 1;
                    println!("connected to redis {} ({sa}), connection #{}", self.addr, self.connects);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn roundtrip(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        let conn = self.conn.as_mut().ok_or_else(|| io::Error::other("not connected"))?;
        conn.writer.write_all(&resp::encode_command(args))?;
        resp::read_value(&mut conn.reader)
    }

    /// Runs a command; on failure reconnects (config re-read) and retries
    /// once. A retried INCR may count twice if the first reply was lost:
    /// acceptable for a visit counter.
    fn command(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        let mut last = None;
        for _ in 0..2 {
            if self.conn.is_none() {
                if let Err(e) = self.connect() {
                    last = Some(e);
                    continue;
                }
            }
            match self.roundtrip(args) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    println!("redis {} failed: {e}; reconnecting", self.addr);
                    self.conn = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis command failed")))
    }
}

/// State shared by the handler threads.
struct App {
    redis: Mutex<Redis>,
    requests: AtomicU64,
    host: String,
}

impl App {
    fn redis(&self) -> std::sync::MutexGuard<'_, Redis> {
        // A panicking handler must not take the whole app down with it.
        self.redis.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one request to (status, content type, body).
    fn handle(&self, req: &http::Request) -> (u16, &'static str, String) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if req.method != "GET" && req.method != "HEAD" {
            return (405, "text/plain", "only GET is supported\n".into());
        }
        match req.path.as_str() {
            "/" => self.visit(),
            "/healthz" => (200, "text/plain", "ok\n".into()),
            "/stats" => (200, "application/json", self.stats()),
            _ => (404, "text/plain", "not found\n".into()),
        }
    }

    fn visit(&self) -> (u16, &'static str, String) {
        let mut redis = self.redis();
        match redis.command(&[b"INCR", b"visits"]) {
            Ok(Value::Integer(n)) => (200, "text/plain", format!("visits={n} host={}\n", self.host)),
            Ok(other) => (503, "text/plain", format!("redis {} answered INCR unexpectedly: {other:?}\n", redis.addr)),
            Err(e) => (503, "text/plain", format!("redis unavailable at {}: {e}\n", redis.addr)),
        }
    }

    fn stats(&self) -> String {
        let redis = self.redis();
        let peer = match &redis.conn {
            Some(c) => format!("\"{}\"", c.peer),
            None => "null".to_string(),
        };
        format!(
            "{{\"host\":\"{}\",\"redis_addr\":\"{}\",\"redis_peer\":{peer},\"redis_connected\":{},\"redis_connects\":{},\"requests\":{}}}\n",
            json_escape(&self.host),
            json_escape(&redis.addr),
            redis.conn.is_some(),
            redis.connects,
            self.requests.load(Ordering::Relaxed),
        )
    }
}

fn json_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

fn serve(app: &App, stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let (status, ctype, body) = match http::read_request(&mut reader) {
        Ok(req) => {
            let (s, c, b) = app.handle(&req);
            (s, c, if req.method == "HEAD" { String::new() } else { b })
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => (400, "text/plain", format!("bad request: {e}\n")),
    };
    http::write_response(&mut writer, status, ctype, &body)
}

/// Fills `mib` MiB with xorshift output (incompressible, so neither CRIU nor a
/// transport can shrink it) and keeps it for the life of the process.
/// A xorshift generator: deterministic, fast, and no dependency.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Fills `block` with random bytes.
fn fill_random(block: &mut [u8], rng: &mut Xorshift) {
    for chunk in block.chunks_mut(8) {
        let word = rng.next().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Fills `block` with JSON-like records: field names repeat, values vary (ids, names from a
/// small vocabulary, numbers), as the objects of an application's heap do.
fn fill_text(block: &mut [u8], rng: &mut Xorshift) {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
        "mike", "november", "oscar", "papa",
    ];
    let mut at = 0;
    while at < block.len() {
        let r = rng.next();
        let record = format!(
            "{{\"id\":{},\"user\":\"{}-{}\",\"score\":{},\"active\":{},\"tags\":[\"{}\",\"{}\"]}},\n",
            r >> 40,
            WORDS[(r & 15) as usize],
            (r >> 4) & 0xfff,
            (r >> 16) % 10_000,
            r & 1 == 0,
            WORDS[((r >> 20) & 15) as usize],
            WORDS[((r >> 24) & 15) as usize],
        );
        let n = record.len().min(block.len() - at);
        block[at..at + n].copy_from_slice(&record.as_bytes()[..n]);
        at += n;
    }
}

fn hold_memory(mib: usize, text: bool) -> &'static mut [u8] {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let mut block = vec![0u8; mib * 1024 * 1024];
    if text {
        fill_text(&mut block, &mut rng);
    } else {
        fill_random(&mut block, &mut rng);
    }
    Box::leak(block.into_boxed_slice())
}

/// Rewrites `percent` % of `held` every second, 64 KiB at a time at random places, spread
/// over the second, with content of the same kind.
fn keep_dirtying(held: &'static mut [u8], percent: usize, text: bool) {
    const PIECE: usize = 64 << 10;
    let pieces = held.len() / PIECE;
    if pieces == 0 || percent == 0 {
        return;
    }
    let per_second = (pieces * percent / 100).max(1);
    let pause = Duration::from_secs(1) / per_second as u32;
    let mut rng = Xorshift(0xD1B5_4A32_D192_ED03);
    thread::spawn(move || loop {
        let at = (rng.next() as usize % pieces) * PIECE;
        let piece = &mut held[at..at + PIECE];
        if text {
            fill_text(piece, &mut rng);
        } else {
            fill_random(piece, &mut rng);
        }
        thread::sleep(pause);
    });
}

/// The worker's loop (see `WORKER_KEY`): its own connection, named, one INCR every 10 ms.
fn work(key: String) {
    let mut redis = Redis::new();
    loop {
        if redis.conn.is_none() {
            let named = redis.connect().and_then(|()| redis.roundtrip(&[b"CLIENT", b"SETNAME", b"worker"]));
            if let Err(e) = named {
                println!("worker: redis not reachable: {e}");
                redis.conn = None;
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        if let Err(e) = redis.roundtrip(&[b"INCR", key.as_bytes()]) {
            println!("worker: INCR {key} failed: {e}; reconnecting");
            redis.conn = None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn main() {
    if let Ok(key) = env::var("WORKER_KEY") {
        thread::spawn(move || work(key));
    }
    if env::var("THP").is_ok_and(|t| t == "never") {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            eprintln!("THP=never: prctl(PR_SET_THP_DISABLE) failed: {}", std::io::Error::last_os_error());
        }
    }
    let text = env::var("MEM_KIND").is_ok_and(|k| k == "text");
    let held = env::var("MEM_MIB").ok().and_then(|m| m.parse::<usize>().ok()).map(|mib| hold_memory(mib, text));
    if let Some(held) = held {
        println!(
            "holding {} MiB of touched memory ({})",
            held.len() / (1024 * 1024),
            if text { "text" } else { "random" }
        );
        let dirty = env::var("DIRTY_PERCENT").ok().and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
        keep_dirtying(held, dirty, text);
    }
    let port = env::var("WEB_PORT").ok().and_then(|p| p.parse::<u16>().ok()).unwrap_or(DEFAULT_PORT);
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        eprintln!("cannot listen on 0.0.0.0:{port}: {e}");
        std::process::exit(1);
    });
    let app = Arc::new(App { redis: Mutex::new(Redis::new()), requests: AtomicU64::new(0), host: hostname() });
    println!("vimigrate-labapp listening on 0.0.0.0:{port}, redis {}", app.redis().addr);
    // Connect eagerly so the persistent connection exists before the first
    // request; failure is fine, requests retry. In the background, so a slow
    // name lookup does not delay /healthz.
    let eager = Arc::clone(&app);
    thread::spawn(move || {
        if let Err(e) = eager.redis().connect() {
            println!("redis not reachable yet: {e}");
        }
    });
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let app = Arc::clone(&app);
                thread::spawn(move || {
                    if let Err(e) = serve(&app, stream) {
                        eprintln!("connection error: {e}");
                    }
                });
            }
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_line_sets_redis_address() {
        let text = "# lab config\nother=1\n redis = 10.0.0.5:6380 \n";
        assert_eq!(parse_config(text).as_deref(), Some("10.0.0.5:6380"));
        assert_eq!(parse_config("#redis=x:1\n"), None);
        assert_eq!(parse_config("redis=\n"), None);
    }

    #[test]
    fn json_escape_quotes_and_controls() {
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
    }
}
