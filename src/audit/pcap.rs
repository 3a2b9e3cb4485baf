//! ClientHellos from a capture file (pcap or pcapng, as written by tcpdump or Wireshark).
//!
//! The capture format is read by the `pcap-parser` crate; this module walks link layers
//! (Ethernet, Linux cooked v1/v2, raw IP, BSD loopback), IPv4 and IPv6 to TCP, and
//! reassembles each connection's first bytes by sequence number, so a hello split across
//! segments (or captured out of order) is read whole. Only the first [`FLOW_LIMIT`] bytes of
//! each direction are kept.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{Block, PcapBlockOwned, PcapError};

use super::{parse_client_hello, ClientHello, HelloError};
use crate::{Code, Error, Result};

/// How many bytes of each TCP direction are reassembled.
pub const FLOW_LIMIT: usize = super::MAX_HELLO_LEN + 1024;

/// One connection found in a capture that began with a TLS handshake from the client.
#[derive(Clone, Debug)]
pub struct CapturedHello {
    /// The device (TCP client).
    pub client: SocketAddr,
    /// The server it connected to.
    pub server: SocketAddr,
    /// The hello, or why it cannot be read.
    pub hello: std::result::Result<ClientHello, HelloError>,
}

#[derive(Default)]
struct Flow {
    /// Sequence number of the first payload byte (SYN + 1, or the first segment seen).
    base: Option<u32>,
    /// Segments by offset from `base`.
    segments: BTreeMap<u32, Vec<u8>>,
    order: usize,
}

impl Flow {
    fn add(&mut self, seq: u32, syn: bool, payload: &[u8]) {
        if syn {
            self.base = Some(seq.wrapping_add(1));
        }
        if payload.is_empty() {
            return;
        }
        let base = *self.base.get_or_insert(seq);
        let offset = seq.wrapping_sub(base);
        if offset as usize >= FLOW_LIMIT {
            return; // retransmission of earlier bytes (wrapped) or past what we keep
        }
        let keep = payload.len().min(FLOW_LIMIT - offset as usize);
        self.segments
            .entry(offset)
            .or_insert_with(|| payload[..keep].to_vec());
    }

    /// The contiguous bytes from the start of the stream.
    fn stream(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        for (&offset, data) in &self.segments {
            let offset = offset as usize;
            if offset > out.len() {
                break;
            }
            let skip = out.len() - offset;
            if skip < data.len() {
                out.extend_from_slice(&data[skip..]);
            }
        }
        out
    }
}

fn bad_capture(message: String) -> Error {
    Error::new(Code::InvalidArgument, message)
}

/// Reads every ClientHello in a capture held in memory. `name` is used in messages.
///
/// Errors (`InvalidArgument`, naming the file): not a pcap or pcapng file, a truncated or
/// corrupt capture (with the number of packets read before the damage).
pub fn hellos_in_capture(bytes: &[u8], name: &str) -> Result<Vec<CapturedHello>> {
    if bytes.is_empty() {
        return Err(bad_capture(format!("{name} is empty, not a capture")));
    }
    let mut reader = pcap_parser::create_reader(1 << 20, bytes).map_err(|e| match e {
        PcapError::HeaderNotRecognized => bad_capture(format!(
            "{name} is not a pcap or pcapng capture (it starts with {:02x?})",
            &bytes[..bytes.len().min(8)]
        )),
        _ => bad_capture(format!(
            "{name} is truncated: its capture header is incomplete"
        )),
    })?;
    let mut flows: HashMap<(SocketAddr, SocketAddr), Flow> = HashMap::new();
    let mut legacy_linktype = 1i32;
    let mut interfaces: Vec<i32> = Vec::new();
    let mut packets = 0usize;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                let frame: Option<(i32, &[u8])> = match &block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy_linktype = h.network.0;
                        None
                    }
                    PcapBlockOwned::Legacy(b) => Some((legacy_linktype, b.data)),
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        interfaces.clear();
                        None
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(idb.linktype.0);
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => interfaces
                        .get(epb.if_id as usize)
                        .map(|lt| (*lt, epb.packet_data())),
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        interfaces.first().map(|lt| (*lt, spb.packet_data()))
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((linktype, data)) = frame {
                    packets += 1;
                    if let Some(seg) = tcp_segment(linktype, data) {
                        let order = flows.len();
                        let flow = flows.entry((seg.src, seg.dst)).or_insert_with(|| Flow {
                            order,
                            ..Flow::default()
                        });
                        flow.add(seg.seq, seg.syn, seg.payload);
                    }
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                reader.refill().map_err(|e| {
                    bad_capture(format!("{name}: read error after {packets} packets: {e:?}"))
                })?;
            }
            Err(PcapError::UnexpectedEof) => {
                return Err(bad_capture(format!(
                    "{name} is truncated: it ends inside a block after {packets} packets"
                )))
            }
            Err(e) => {
                return Err(bad_capture(format!(
                    "{name} is corrupt after {packets} packets ({e:?})"
                )))
            }
        }
    }
    let mut found: Vec<(usize, CapturedHello)> = flows
        .iter()
        .filter_map(|(&(client, server), flow)| {
            let stream = flow.stream();
            // A client's first flight starts with a handshake record holding type 1, or an
            // SSLv2-format hello; servers' start with type 2. Other protocols are skipped.
            let is_hello =
                (stream.len() >= 6 && stream[0] == 22 && stream[1] == 3 && stream[5] == 1)
                    || (stream.len() >= 3 && stream[0] & 0x80 != 0 && stream[2] == 1);
            is_hello.then(|| {
                (
                    flow.order,
                    CapturedHello {
                        client,
                        server,
                        hello: parse_client_hello(&stream),
                    },
                )
            })
        })
        .collect();
    found.sort_by_key(|(order, _)| *order);
    Ok(found.into_iter().map(|(_, h)| h).collect())
}

struct Segment<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    syn: bool,
    payload: &'a [u8],
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Walks a frame down to its TCP segment.
fn tcp_segment(linktype: i32, frame: &[u8]) -> Option<Segment<'_>> {
    let ip = match linktype {
        1 => {
            // Ethernet, with up to two VLAN tags.
            let mut at = 12;
            let mut ethertype = be16(frame, at)?;
            while ethertype == 0x8100 || ethertype == 0x88a8 {
                at += 4;
                ethertype = be16(frame, at)?;
            }
            (ethertype, frame.get(at + 2..)?)
        }
        113 => (be16(frame, 14)?, frame.get(16..)?), // Linux cooked (SLL)
        276 => (be16(frame, 0)?, frame.get(20..)?),  // Linux cooked v2 (SLL2)
        101 | 12 | 14 => match frame.first()? >> 4 {
            4 => (0x0800, frame),
            6 => (0x86dd, frame),
            _ => return None,
        },
        0 | 108 => {
            // BSD loopback: a 4-byte address family in host or network order.
            let family = frame.get(..4)?;
            let af = u32::from_le_bytes([family[0], family[1], family[2], family[3]]).min(
                u32::from_be_bytes([family[0], family[1], family[2], family[3]]),
            );
            (if af == 2 { 0x0800 } else { 0x86dd }, frame.get(4..)?)
        }
        _ => return None,
    };
    let (src_ip, dst_ip, tcp) = match ip {
        (0x0800, p) => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if p.first()? >> 4 != 4 || ihl < 20 || *p.get(9)? != 6 {
                return None;
            }
            let fragment = be16(p, 6)?;
            if fragment & 0x3fff != 0 {
                return None; // IP fragments: not reassembled
            }
            let total = usize::from(be16(p, 2)?).max(ihl);
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(*p.get(16)?, p[17], p[18], p[19]);
            let end = total.min(p.len());
            (IpAddr::V4(src), IpAddr::V4(dst), p.get(ihl..end)?)
        }
        (0x86dd, p) => {
            if p.first()? >> 4 != 6 {
                return None;
            }
            let payload_len = usize::from(be16(p, 4)?);
            let mut next = *p.get(6)?;
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let end = (40 + payload_len).min(p.len());
            let mut at = 40;
            // Skip hop-by-hop, routing and destination options headers.
            while matches!(next, 0 | 43 | 60) {
                next = *p.get(at)?;
                at += (usize::from(*p.get(at + 1)?) + 1) * 8;
            }
            if next != 6 {
                return None;
            }
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                p.get(at..end)?,
            )
        }
        _ => return None,
    };
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    if data_offset < 20 {
        return None;
    }
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    Some(Segment {
        src: SocketAddr::new(src_ip, be16(tcp, 0)?),
        dst: SocketAddr::new(dst_ip, be16(tcp, 2)?),
        seq,
        syn: tcp.get(13)? & 0x02 != 0,
        payload: tcp.get(data_offset..)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with IPv6 and a TCP segment.
    fn frame_v6(src_port: u16, dst_port: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&0x86ddu16.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[6, 64]);
        ip.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let mut tcp = src_port.to_be_bytes().to_vec();
        tcp.extend_from_slice(&dst_port.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        f.extend(ip);
        f.extend(tcp);
        f
    }

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&total.to_le_bytes());
        b.extend_from_slice(body);
        b.resize(8 + padded, 0);
        b.extend_from_slice(&total.to_le_bytes());
        b
    }

    fn pcapng(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut shb = 0x1a2b3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        let mut out = block(0x0a0d0d0a, &shb);
        let mut idb = 1u16.to_le_bytes().to_vec(); // Ethernet
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&65535u32.to_le_bytes());
        out.extend(block(1, &idb));
        for f in frames {
            let mut epb = 0u32.to_le_bytes().to_vec();
            epb.extend_from_slice(&[0; 8]);
            epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(f.len() as u32).to_le_bytes());
            epb.extend_from_slice(f);
            out.extend(block(6, &epb));
        }
        out
    }

    #[test]
    fn pcapng_ipv6_hello_split_and_out_of_order_is_reassembled() {
        let hello = crate::audit::tests::hello(0x0302, &[0xc013], &[]);
        let (a, b) = hello.split_at(20);
        let isn = 1000u32;
        let frames = vec![
            frame_v6(50000, 8883, isn, 0x02, &[]),                    // SYN
            frame_v6(8883, 50000, 7, 0x12, &[]),                      // SYN-ACK
            frame_v6(50000, 8883, isn + 1 + 20, 0x18, b),             // second half first
            frame_v6(50000, 8883, isn + 1, 0x18, a),                  // then the first
            frame_v6(50000, 8883, isn + 1, 0x18, a),                  // a retransmission
            frame_v6(8883, 50000, 8, 0x18, &[21, 3, 3, 0, 2, 2, 40]), // server alert
        ];
        let found = hellos_in_capture(&pcapng(&frames), "test.pcapng").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].client.to_string(), "[::1]:50000");
        assert_eq!(found[0].server.port(), 8883);
        let h = found[0].hello.as_ref().unwrap();
        assert_eq!(
            (h.legacy_version, h.cipher_suites.clone()),
            (0x0302, vec![0xc013])
        );
    }

    #[test]
    fn bad_captures_are_named() {
        let e = hellos_in_capture(b"[package]\nname = \"x\"\n", "Cargo.toml").unwrap_err();
        assert!(
            e.message()
                .starts_with("Cargo.toml is not a pcap or pcapng capture"),
            "{}",
            e.message()
        );
        let hello = crate::audit::tests::hello(0x0303, &[0xc02f], &[]);
        let file = pcapng(&[frame_v6(1, 2, 0, 0x18, &hello)]);
        let e = hellos_in_capture(&file[..file.len() - 10], "cut.pcapng").unwrap_err();
        assert!(
            e.message().starts_with("cut.pcapng is truncated"),
            "{}",
            e.message()
        );
        assert!(hellos_in_capture(&[], "empty")
            .unwrap_err()
            .message()
            .contains("empty"));
    }
}
