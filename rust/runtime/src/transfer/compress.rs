//! Adaptive zstd compression of the transfer stream.
//!
//! Compressing pays when the bytes it saves take longer to cross the link than compressing
//! takes: per raw byte, `compress + ratio * link < link`, i.e. `compress < (1 - ratio) * link`,
//! with `ratio` the compressed size over the raw one and `compress` and `link` the costs in
//! nanoseconds per byte. The sender runs on one thread (CRIU has the other core), so the
//! compressor's time adds to the link's rather than overlapping it, which is what the rule
//! assumes. All three figures are measured during the transfer itself, not guessed: the ratio
//! and the compressor's speed on every chunk it tries, the link's cost from the time the writes
//! block (TLS encryption included, which compression saves too) over windows of a
//! few MiB, because the socket's buffer and the sender's own hide single writes.
//!
//! While compression does not pay (a fast link, incompressible memory) one chunk in
//! 16 is still tried, so that the decision follows the data and the link as they
//! change; a chunk is sent compressed only when it shrank by 10 % at least.

use std::time::{Duration, Instant};

use vimigrate_protocol::StreamCompression;

/// zstd's level: its fastest levels keep up with a 1 Gbit/s link on one core; the higher ones
/// gain a few percent for several times the time.
const LEVEL: i32 = 1;
/// Chunks compressed before the rule has figures to decide on.
const WARMUP: u64 = 2;
/// While compression does not pay, one chunk in this many is tried anyway.
const PROBE_EVERY: u64 = 16;
/// A chunk goes compressed only when it shrank to this fraction of its size or less.
const MIN_GAIN: f64 = 0.9;
/// Chunks smaller than this go as they are.
const MIN_CHUNK: usize = 4096;
/// Bytes written between two updates of the link's cost...
const LINK_WINDOW: u64 = 2 << 20;
/// ... or writes, whichever comes first (well compressed chunks are small).
const LINK_WINDOW_WRITES: u32 = 8;
/// Share of the measured gain required: the rule counts the compressor's own time but not the
/// receiver's decompression, nor the core compression takes from CRIU's dump on a busy host.
/// Measured in the lab (a 200 MiB text heap, both hosts on one 2-core machine): at the plain
/// break-even an unshaped veth lost up to 0.4 s of downtime; at 0.9 it breaks even, and
/// 1 Gbit/s gains (2.04 s against 2.35 s uncompressed), 200 Mbit/s 3.4x.
const MARGIN: f64 = 0.9;
/// Weight of the newest observation in the running averages.
const WEIGHT: f64 = 0.3;

/// A running average: `None` until the first observation.
#[derive(Debug, Clone, Copy, Default)]
struct Average(Option<f64>);

impl Average {
    fn observe(&mut self, value: f64) {
        self.0 = Some(match self.0 {
            None => value,
            Some(old) => old + WEIGHT * (value - old),
        });
    }
}

/// The sender's compressor and its decision (see the module documentation).
pub struct Compressor {
    mode: StreamCompression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
    /// Compressed size over raw size, of the chunks tried.
    ratio: Average,
    /// Nanoseconds of compression per raw byte.
    compress_ns: Average,
    /// Nanoseconds of blocked writes per byte on the wire.
    link_ns: Average,
    window_bytes: u64,
    window_writes: u32,
    window_time: Duration,
    chunks: u64,
    /// Raw bytes that went through [`Compressor::encode`].
    pub raw_bytes: u64,
    /// Bytes that went on the wire for them.
    pub wire_bytes: u64,
    /// Chunks sent compressed.
    pub compressed_chunks: u64,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("mode", &self.mode)
            .field("ratio", &self.ratio.0)
            .field("compress_ns", &self.compress_ns.0)
            .field("link_ns", &self.link_ns.0)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor for `mode` (with [`StreamCompression::Off`] it never compresses).
    pub fn new(mode: StreamCompression) -> std::io::Result<Compressor> {
        let zstd = match mode {
            StreamCompression::Off => None,
            _ => Some(zstd::bulk::Compressor::new(LEVEL)?),
        };
        Ok(Compressor {
            mode,
            zstd,
            out: Vec::new(),
            ratio: Average::default(),
            compress_ns: Average::default(),
            link_ns: Average::default(),
            window_bytes: 0,
            window_writes: 0,
            window_time: Duration::ZERO,
            chunks: 0,
            raw_bytes: 0,
            wire_bytes: 0,
            compressed_chunks: 0,
        })
    }

    /// Whether compressing pays with what was measured so far.
    fn pays(&self) -> bool {
        match (self.ratio.0, self.compress_ns.0, self.link_ns.0) {
            (Some(ratio), _, _) if ratio > MIN_GAIN => false,
            (Some(ratio), Some(compress), Some(link)) => compress < MARGIN * (1.0 - ratio) * link,
            // Nothing measured yet, or not the link: what shrinks is sent shrunk.
            _ => true,
        }
    }

    fn tries(&self) -> bool {
        match self.mode {
            StreamCompression::Off => false,
            StreamCompression::Always => true,
            StreamCompression::Adaptive => self.chunks < WARMUP || self.pays() || self.chunks % PROBE_EVERY == 0,
        }
    }

    /// The chunk compressed, when it should go so; `None` sends `raw` as it is. Call
    /// [`Compressor::wrote`] after each write either way.
    pub fn encode(&mut self, raw: &[u8]) -> Option<&[u8]> {
        self.chunks += 1;
        self.raw_bytes += raw.len() as u64;
        if raw.len() < MIN_CHUNK || !self.tries() {
            self.wire_bytes += raw.len() as u64;
            return None;
        }
        let zstd = self.zstd.as_mut()?;
        self.out.resize(zstd::zstd_safe::compress_bound(raw.len()), 0);
        let started = Instant::now();
        let Ok(len) = zstd.compress_to_buffer(raw, &mut self.out[..]) else {
            self.wire_bytes += raw.len() as u64;
            return None;
        };
        let took = started.elapsed();
        let ratio = len as f64 / raw.len() as f64;
        self.ratio.observe(ratio);
        self.compress_ns.observe(took.as_nanos() as f64 / raw.len() as f64);
        let send_compressed = ratio <= MIN_GAIN && (self.mode == StreamCompression::Always || self.pays());
        if send_compressed {
            self.compressed_chunks += 1;
            self.wire_bytes += len as u64;
            Some(&self.out[..len])
        } else {
            self.wire_bytes += raw.len() as u64;
            None
        }
    }

    /// Tells the compressor that `bytes` went on the wire in `took` (the time the writes
    /// blocked): the link's cost, per window.
    pub fn wrote(&mut self, bytes: usize, took: Duration) {
        if self.mode == StreamCompression::Off {
            return;
        }
        self.window_bytes += bytes as u64;
        self.window_writes += 1;
        self.window_time += took;
        if self.window_bytes >= LINK_WINDOW || self.window_writes >= LINK_WINDOW_WRITES {
            self.link_ns.observe(self.window_time.as_nanos() as f64 / self.window_bytes.max(1) as f64);
            self.window_bytes = 0;
            self.window_writes = 0;
            self.window_time = Duration::ZERO;
        }
    }

    /// Raw bytes over wire bytes (1 when nothing was compressed).
    pub fn ratio(&self) -> f64 {
        if self.wire_bytes == 0 {
            1.0
        } else {
            self.raw_bytes as f64 / self.wire_bytes as f64
        }
    }
}

/// Decompresses one `Zdata` chunk into `out`, which must end up exactly full: a chunk that
/// claims another size is refused, and nothing larger than `out` is ever produced.
pub fn decompress_chunk(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    compressed: &[u8],
    out: &mut [u8],
) -> std::io::Result<()> {
    let n = decompressor.decompress_to_buffer(compressed, out)?;
    if n != out.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a compressed chunk of {n} bytes where {} were announced", out.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON-like text, as a heap of an application holds.
    fn heap(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(format!("{{\"id\":{i},\"name\":\"user-{}\",\"active\":true}},", i % 977).as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn round_trip(chunk: &[u8], compressed: &[u8]) {
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        let mut out = vec![0; chunk.len()];
        decompress_chunk(&mut d, compressed, &mut out).unwrap();
        assert_eq!(out, chunk);
    }

    #[test]
    fn a_slow_link_and_a_text_heap_compress() {
        let mut c = Compressor::new(StreamCompression::Adaptive).unwrap();
        let chunk = heap(1 << 20);
        for _ in 0..20 {
            let sent = c.encode(&chunk).map(<[u8]>::to_vec);
            let sent = sent.expect("a text heap over a slow link goes compressed");
            round_trip(&chunk, &sent);
            // 200 Mbit/s: 40 ns per byte.
            c.wrote(sent.len(), Duration::from_nanos(40 * sent.len() as u64));
        }
        assert!(c.ratio() > 4.0, "{c:?} {}", c.ratio());
    }

    #[test]
    fn incompressible_memory_goes_raw_and_is_only_probed() {
        let mut c = Compressor::new(StreamCompression::Adaptive).unwrap();
        let chunk = noise(1 << 20);
        let mut tried = 0;
        for _ in 0..64 {
            let before = c.ratio.0;
            assert!(c.encode(&chunk).is_none());
            if c.ratio.0 != before || c.chunks <= WARMUP {
                tried += 1;
            }
            c.wrote(chunk.len(), Duration::from_nanos(40 * chunk.len() as u64));
        }
        assert!(tried <= (WARMUP + 64 / PROBE_EVERY + 1) as usize, "tried {tried} of 64");
        assert_eq!(c.compressed_chunks, 0);
        assert_eq!(c.wire_bytes, c.raw_bytes);
    }

    #[test]
    fn a_link_faster_than_the_compressor_goes_raw() {
        let mut c = Compressor::new(StreamCompression::Adaptive).unwrap();
        let chunk = heap(1 << 20);
        let mut compressed = 0;
        for i in 0..48 {
            let sent = c.encode(&chunk).map_or(chunk.len(), <[u8]>::len);
            if sent < chunk.len() && i >= 12 {
                compressed += 1;
            }
            // A link that costs nothing: nothing pays for the compressor's time.
            c.wrote(sent, Duration::from_nanos(sent as u64 / 100));
        }
        assert!(compressed <= 36 / PROBE_EVERY as usize + 1, "compressed {compressed} after the link was measured");
    }

    #[test]
    fn off_never_compresses_and_always_always_does() {
        let chunk = heap(1 << 16);
        let mut off = Compressor::new(StreamCompression::Off).unwrap();
        assert!(off.encode(&chunk).is_none());
        let mut always = Compressor::new(StreamCompression::Always).unwrap();
        for _ in 0..4 {
            assert!(always.encode(&chunk).is_some());
            always.wrote(100, Duration::ZERO);
        }
        assert!(always.encode(&noise(1 << 16)).is_none(), "not even `always` sends what grew");
    }

    #[test]
    fn a_chunk_that_lies_about_its_size_is_refused() {
        let chunk = heap(8192);
        let compressed = zstd::bulk::compress(&chunk, 1).unwrap();
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        assert!(decompress_chunk(&mut d, &compressed, &mut vec![0; 8191]).is_err(), "larger than announced");
        assert!(decompress_chunk(&mut d, &compressed, &mut vec![0; 8193]).is_err(), "smaller than announced");
        assert!(decompress_chunk(&mut d, b"not zstd", &mut [0; 10]).is_err());
    }
}
