//! The link: one TLS connection (rustls, under the IoT Hub policy) carrying MQTT. The one
//! place that reads, decrypts, decodes, encodes and encrypts: bytes from the transport go
//! in through [`Link::receive`], plaintext MQTT packets come out of [`Link::take_rx`] for
//! decoding, packets to send go in through [`Link::write`], and encrypted bytes for the
//! transport come out of [`Link::poll_output`].
//!
//! Failures are named here once: during the handshake by [`handshake::describe`] (the
//! refused version, suite or certificate), after it as a rejected record.
//!
//! Between TLS and MQTT sits the [`Framing`]: nothing for MQTT on 8883, or a WebSocket
//! (MQTT over WebSockets on 443): the upgrade request goes first once TLS is up, the
//! first packet once the server has accepted it, and every packet in a binary frame.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection};
use zeroize::Zeroizing;

use crate::error::{Code, Error, Result};
use crate::handshake::{self, HelloSniffer};
use crate::transport::Framing;
use crate::verify;

/// Why [`take_in`] stopped.
pub(crate) enum TakeIn {
    /// Reading the bytes into rustls failed.
    Io(std::io::Error),
    /// A record was refused (a handshake refusal, a record that does not decrypt).
    Tls(rustls::Error),
}

/// Hands the next part of `data` (client or server side) to rustls and processes the
/// records it completes, advancing `data`: the one place tether calls
/// `process_new_packets`. Call until `data` is empty, taking the plaintext in between.
/// What certificate verification saw during the call is kept in `chain` (per connection,
/// for naming a refused certificate).
pub(crate) fn take_in<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    data: &mut &[u8],
    chain: &mut Option<verify::ChainRecord>,
) -> std::result::Result<(), TakeIn> {
    conn.read_tls(data).map_err(TakeIn::Io)?;
    let (processed, record) = verify::capture(|| conn.process_new_packets());
    if record.is_some() {
        *chain = record;
    }
    processed.map(|_| ()).map_err(TakeIn::Tls)
}

/// What one [`Link::receive`] learned besides the plaintext it queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Received {
    /// The handshake completed with these bytes (the first packet is now written, or with
    /// WebSockets the upgrade request).
    pub handshake_done: bool,
    /// The peer sent close_notify.
    pub peer_closed: bool,
}

/// One TLS connection carrying MQTT.
pub(crate) struct Link {
    tls: ClientConnection,
    /// The server name the connection is verified against, for messages.
    server_name: String,
    has_client_cert: bool,
    /// The first packet (the CONNECT, which may hold the SAS token), written to `tls` once
    /// the handshake is complete: rustls would otherwise keep a plaintext copy it does not
    /// wipe until then.
    first_packet: Option<Zeroizing<Vec<u8>>>,
    sniffer: HelloSniffer,
    handshake_reported: bool,
    tls_version: String,
    cipher_suite: String,
    /// Decrypted bytes not yet decoded into packets.
    rx: Vec<u8>,
    /// What the certificate verification of this handshake saw, for naming a failure
    /// (this link's own, whatever other links do on the thread; dropped once the handshake
    /// is complete).
    chain: Option<verify::ChainRecord>,
    /// The trust anchor the verified chain ended in, kept once the handshake is complete.
    anchor: Option<String>,
    /// Encoded packets not yet encrypted: everything written between two
    /// [`Link::poll_output`] calls goes out as one TLS record (per 16 KiB) and so one
    /// transport write. The buffer is kept and reused.
    pending: Vec<u8>,
    /// WebSockets between TLS and MQTT, or nothing.
    framing: Framing,
    /// The WebSocket upgrade request, written once the TLS handshake is complete.
    upgrade: Option<Vec<u8>>,
}

impl Link {
    /// A link to `server_name` whose TLS handshake starts with the next
    /// [`Link::poll_output`]; `first_packet` is written once it completes. With
    /// `websocket` (the largest message accepted), MQTT goes over WebSockets.
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        server_name: &str,
        has_client_cert: bool,
        first_packet: Option<Zeroizing<Vec<u8>>>,
        websocket: Option<usize>,
    ) -> Result<Link> {
        let (framing, upgrade) = Framing::new(
            websocket.is_some(),
            server_name,
            has_client_cert,
            websocket.unwrap_or(0),
        )?;
        let name = handshake::server_name(server_name)?;
        let mut tls = ClientConnection::new(config, name)
            .map_err(|e| Error::new(Code::TlsHandshakeFailed, format!("TLS setup: {e}")))?;
        tls.set_buffer_limit(None);
        Ok(Link {
            tls,
            server_name: server_name.to_owned(),
            has_client_cert,
            first_packet,
            sniffer: HelloSniffer::default(),
            handshake_reported: false,
            tls_version: String::new(),
            cipher_suite: String::new(),
            rx: Vec::new(),
            chain: None,
            anchor: None,
            pending: Vec::new(),
            framing,
            upgrade,
        })
    }

    /// Feeds bytes received from the transport: decrypts them and queues the plaintext for
    /// [`Link::take_rx`]. A refused handshake is named by its cause; a record rejected after
    /// it is an I/O failure (a corrupted or forged record, not a policy matter).
    pub(crate) fn receive(&mut self, data: &[u8]) -> Result<Received> {
        if self.tls.is_handshaking() {
            self.sniffer.feed(data);
        }
        let mut received = Received::default();
        let mut rest = data;
        while !rest.is_empty() && !received.peer_closed {
            let processed = match take_in(&mut self.tls, &mut rest, &mut self.chain) {
                Err(TakeIn::Io(e)) => return Err(Error::new(Code::Io, format!("TLS input: {e}"))),
                Err(TakeIn::Tls(err)) => Err(err),
                Ok(()) => Ok(()),
            };
            if let Err(err) = processed {
                if self.handshake_reported {
                    return Err(Error::new(
                        Code::Io,
                        format!("TLS record from {} rejected: {err}", self.server_name),
                    ));
                }
                let ctx = handshake::Context {
                    host: self.server_name.clone(),
                    has_client_cert: self.has_client_cert,
                    sniffed: std::mem::take(&mut self.sniffer),
                    chain: self.chain.take(),
                };
                return Err(handshake::describe(&err, &ctx));
            }
            if !self.framing.is_websocket() {
                // Straight into `rx` (no zeroed 16 KiB buffer per record): the end of the stream
                // (close_notify) ends `read_to_end`; "no more data for now" is WouldBlock, with
                // what was read already appended.
                match self.tls.reader().read_to_end(&mut self.rx) {
                    Ok(_) => received.peer_closed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(Error::new(Code::ConnectionClosed, format!("TLS: {e}"))),
                }
            } else {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match self.tls.reader().read(&mut buf) {
                        Ok(0) => {
                            received.peer_closed = true;
                            break;
                        }
                        Ok(n) => {
                            let mut reply = Vec::new();
                            let framed = self.framing.receive(&buf[..n], &mut self.rx, &mut reply);
                            // Pongs and the close reply go out even when the input ends here.
                            let _ = self.tls.writer().write_all(&reply);
                            framed?;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            return Err(Error::new(Code::ConnectionClosed, format!("TLS: {e}")))
                        }
                    }
                }
            }
        }
        if !self.handshake_reported && !self.tls.is_handshaking() {
            self.handshake_reported = true;
            received.handshake_done = true;
            self.tls_version = self
                .tls
                .protocol_version()
                .map(|v| handshake::version_name(u16::from(v)))
                .unwrap_or_default();
            self.cipher_suite = self
                .tls
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default();
            self.sniffer = HelloSniffer::default();
            self.anchor = self.chain.take().and_then(|r| r.anchor);
            if let Some(upgrade) = self.upgrade.take() {
                self.tls
                    .writer()
                    .write_all(&upgrade)
                    .map_err(|e| Error::new(Code::Io, format!("TLS buffer: {e}")))?;
            }
        }
        // The first packet goes once TLS (and the WebSocket upgrade, if any) is complete.
        if self.handshake_reported && self.framing.is_ready() {
            if let Some(first) = self.first_packet.take() {
                self.framing.write(&mut self.tls.writer(), &first, true)?;
            }
        }
        Ok(received)
    }

    /// Takes the decrypted bytes not yet decoded; give back what is left with
    /// [`Link::restore_rx`] (the caller decodes packets that borrow from them while it
    /// changes its own state).
    pub(crate) fn take_rx(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rx)
    }

    /// Gives back the buffer from [`Link::take_rx`] with its first `consumed` bytes decoded.
    pub(crate) fn restore_rx(&mut self, mut rx: Vec<u8>, consumed: usize) {
        rx.drain(..consumed);
        self.rx = rx;
    }

    /// Queues an encoded packet for sending (encrypted by the next [`Link::poll_output`]).
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// The queue of encoded packets, to encode one straight into it.
    pub(crate) fn pending_mut(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Encrypts the queued packets: one `write` into rustls, which makes one record per
    /// 16 KiB. Held back until the first packet (the CONNECT) is written, which waits for
    /// the TLS handshake and, with WebSockets, the upgrade.
    fn seal(&mut self) {
        if self.pending.is_empty()
            || self.first_packet.is_some()
            || self.tls.is_handshaking()
            || !self.framing.is_ready()
        {
            return;
        }
        // rustls buffers without limit (`set_buffer_limit(None)`): the write takes it all.
        // With WebSockets the burst is one frame (MQTT lets a frame carry several packets).
        if self
            .framing
            .write(&mut self.tls.writer(), &self.pending, false)
            .is_ok()
        {
            self.pending.clear();
        }
    }

    /// Appends the bytes to send on the transport to `out`; returns how many. This is the
    /// flush point: what was written since the last call leaves as one TLS record (per
    /// 16 KiB) appended to `out` in one piece.
    pub(crate) fn poll_output(&mut self, out: &mut Vec<u8>) -> usize {
        self.seal();
        let before = out.len();
        while self.tls.wants_write() {
            if self.tls.write_tls(out).is_err() {
                break;
            }
        }
        out.len() - before
    }

    /// Writes encrypted output to `out` until none is left or `out` takes no more (a full
    /// slice, `WouldBlock`); the rest stays queued in rustls, in order. No copy is made.
    pub(crate) fn write_output(&mut self, out: &mut dyn Write) -> std::io::Result<usize> {
        self.seal();
        let mut written = 0;
        while self.tls.wants_write() {
            match self.tls.write_tls(out) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Whether the TLS session was resumed rather than negotiated in full.
    pub(crate) fn resumed(&self) -> bool {
        self.tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Whether output is waiting for [`Link::poll_output`].
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.wants_write() || !self.pending.is_empty()
    }

    /// Whether the TLS handshake is still going on.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// The error for a transport the peer closed: during the handshake it names what the
    /// server's messages so far suggest (no TLS on this port, a client certificate
    /// required); after it, a closed connection.
    pub(crate) fn transport_closed(&mut self) -> Error {
        if !self.tls.is_handshaking() {
            return Error::new(
                Code::ConnectionClosed,
                format!("{} closed the connection", self.server_name),
            );
        }
        handshake::closed_early(&handshake::Context {
            host: self.server_name.clone(),
            has_client_cert: self.has_client_cert,
            sniffed: std::mem::take(&mut self.sniffer),
            chain: None,
        })
    }

    /// The trust anchor the server's chain ended in, once the handshake is done.
    pub(crate) fn anchor(&self) -> Option<&str> {
        self.anchor.as_deref()
    }

    /// The server's certificate chain, leaf first, once the handshake is done.
    pub(crate) fn peer_certificates(&self) -> &[rustls::pki_types::CertificateDer<'static>] {
        self.tls.peer_certificates().unwrap_or_default()
    }

    /// Queues the TLS close_notify alert (after the packets already queued).
    pub(crate) fn send_close_notify(&mut self) {
        self.seal();
        self.framing.close(&mut self.tls.writer());
        self.tls.send_close_notify();
    }

    /// The negotiated TLS version (e.g. `TLSv1.2`), once the handshake is done.
    pub(crate) fn tls_version(&self) -> &str {
        &self.tls_version
    }

    /// The negotiated cipher suite (IANA name), once the handshake is done.
    pub(crate) fn cipher_suite(&self) -> &str {
        &self.cipher_suite
    }
}
