//! The codec against a real broker: mosquitto on a plain loopback listener answers the
//! CONNECT/SUBSCRIBE/PUBLISH/UNSUBSCRIBE/PINGREQ bytes we encode, and we decode its
//! CONNACK/SUBACK/PUBACK/PUBLISH/UNSUBACK/PINGRESP as they arrive from the socket.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Mosquitto;
use tether::mqtt::codec::{self, ConnectReturnCode, Decoded, Packet};
use tether::mqtt::properties::{PropertyBag, CONTENT_TYPE};
use tether::mqtt::topics::{self, UsernameOptions};
use tether::Code;

const PLAIN: &str = "listener {port} 127.0.0.1\nallow_anonymous true\n";

/// An MQTT connection driven by the codec; reads in small pieces so packets arrive split.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    read_size: usize,
}

impl Conn {
    fn open(port: u16, read_size: usize) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to mosquitto");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
            read_size,
        }
    }

    fn send(&mut self, encode: impl FnOnce(&mut [u8]) -> tether::Result<usize>, size: usize) {
        let mut out = vec![0u8; size];
        let n = encode(&mut out).expect("encodes");
        assert_eq!(n, size, "the encoder reports the bytes it wrote");
        self.stream.write_all(&out[..n]).unwrap();
    }

    /// Decodes the next packet and hands it to `f`, reading from the socket as needed.
    fn next<R>(&mut self, f: impl FnOnce(Packet<'_>) -> R) -> R {
        loop {
            match codec::decode(&self.buf, codec::DEFAULT_MAX_PACKET_SIZE).expect("decodes") {
                Decoded::Complete { packet, len } => {
                    let r = f(packet);
                    self.buf.drain(..len);
                    return r;
                }
                Decoded::Incomplete { needed } => {
                    let want = needed.min(self.read_size).max(1);
                    let mut chunk = vec![0u8; want];
                    let n = self
                        .stream
                        .read(&mut chunk)
                        .expect("the broker answers within 10 s");
                    assert!(n > 0, "the broker closed the connection");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

fn connect_packet<'a>(client: &'a str, user: Option<&'a str>) -> codec::Connect<'a> {
    codec::Connect {
        client_id: client,
        username: user,
        password: user.map(|_| "SharedAccessSignature sr=x&sig=y&se=1"),
        keep_alive_s: 30,
        clean_session: true,
        will: None,
    }
}

#[test]
fn mosquitto_accepts_our_packets_and_we_decode_its_replies() {
    let broker = Mosquitto::start(PLAIN);
    let device = "my_device";
    let client_id = topics::client_id(device, None).unwrap();
    let username = topics::username(
        "localhost",
        device,
        None,
        &UsernameOptions {
            client_type: Some("tether-test/0.1"),
            ..Default::default()
        },
    )
    .unwrap();
    let mut conn = Conn::open(broker.port, 7);

    let c = connect_packet(&client_id, Some(&username));
    let len = c.encoded_len().unwrap();
    conn.send(|b| c.encode(b), len);
    conn.next(|p| {
        assert_eq!(
            p,
            Packet::ConnAck {
                session_present: false,
                code: ConnectReturnCode::Accepted
            }
        )
    });

    let mut c2d_filter = String::new();
    topics::c2d_subscribe_topic_to(&mut c2d_filter, device).unwrap();
    let filters = [
        (c2d_filter.as_str(), 1u8),
        (topics::TWIN_RESPONSE_SUBSCRIBE_TOPIC, 0u8),
    ];
    let len = codec::subscribe_len(10, &filters).unwrap();
    conn.send(|b| codec::encode_subscribe(10, &filters, b), len);
    conn.next(|p| {
        assert_eq!(
            p,
            Packet::SubAck {
                pkid: 10,
                return_codes: &[1, 0]
            }
        )
    });

    // A QoS 1 message on the cloud-to-device topic comes back to us: PUBACK for ours,
    // then the broker's PUBLISH (in either order).
    let mut bag = PropertyBag::new();
    bag.append("$.to", Some("/devices/my_device/messages/deviceBound"))
        .append(CONTENT_TYPE, Some("application/json"))
        .append("flag", None);
    let topic = format!("devices/{device}/messages/devicebound/{}", bag.as_str());
    let payload = br#"{"temperature":21.5}"#;
    let p = codec::Publish {
        topic: &topic,
        payload,
        qos: 1,
        pkid: 11,
        dup: false,
    };
    let len = p.encoded_len().unwrap();
    conn.send(|b| p.encode(b), len);
    let mut got_ack = false;
    let mut got_publish = None;
    while !got_ack || got_publish.is_none() {
        conn.next(|packet| match packet {
            Packet::PubAck { pkid } => {
                assert_eq!(pkid, 11);
                got_ack = true;
            }
            Packet::Publish(r) => {
                assert_eq!(r.topic, topic);
                assert_eq!(r.payload, payload);
                assert_eq!(r.qos, 1);
                let parsed = topics::parse_c2d_topic(r.topic).unwrap();
                assert_eq!(parsed.device_id, device);
                let to = parsed.properties().find("$.to").unwrap().unwrap();
                assert_eq!(
                    to.decoded_value().unwrap().as_deref(),
                    Some("/devices/my_device/messages/deviceBound")
                );
                let flag = parsed.properties().find("flag").unwrap().unwrap();
                assert_eq!(flag.value, None);
                got_publish = Some(r.pkid);
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    let pkid = got_publish.unwrap();
    conn.send(|b| codec::encode_puback(pkid, b), 4);

    // A 256 KiB QoS 0 message, the largest IoT Hub takes, arrives in many pieces.
    let big: Vec<u8> = (0..topics::MAX_MESSAGE_SIZE)
        .map(|i| (i % 251) as u8)
        .collect();
    let p = codec::Publish {
        topic: &topic,
        payload: &big,
        qos: 0,
        pkid: 0,
        dup: false,
    };
    let len = p.encoded_len().unwrap();
    conn.read_size = 1500;
    conn.send(|b| p.encode(b), len);
    conn.next(|packet| {
        let Packet::Publish(r) = packet else {
            panic!("expected the large PUBLISH, got {packet:?}")
        };
        assert_eq!((r.qos, r.payload.len()), (0, big.len()));
        assert!(r.payload == &big[..], "the payload came back unchanged");
    });

    let unsub = [c2d_filter.as_str()];
    let len = codec::unsubscribe_len(12, &unsub).unwrap();
    conn.send(|b| codec::encode_unsubscribe(12, &unsub, b), len);
    conn.next(|p| assert_eq!(p, Packet::UnsubAck { pkid: 12 }));

    conn.send(codec::encode_pingreq, 2);
    conn.next(|p| assert_eq!(p, Packet::PingResp));

    conn.send(codec::encode_disconnect, 2);
    let mut rest = Vec::new();
    conn.stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing follows a DISCONNECT");
    let log = broker.log();
    assert!(
        log.contains("New client connected") && log.contains(&client_id),
        "the broker logged our client:\n{log}"
    );
}

#[test]
fn mosquitto_refusal_is_decoded_and_named() {
    let broker = Mosquitto::start("listener {port} 127.0.0.1\nallow_anonymous false\n");
    let mut conn = Conn::open(broker.port, 64);
    let c = connect_packet("my_device", None);
    let len = c.encoded_len().unwrap();
    conn.send(|b| c.encode(b), len);
    let code = conn.next(|p| match p {
        Packet::ConnAck { code, .. } => code,
        other => panic!("expected CONNACK, got {other:?}"),
    });
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let e = code.result().unwrap_err();
    assert_eq!(e.code(), Code::NotAuthorized);
    assert!(e.message().contains("CONNACK 5 (not authorized)"), "{e}");
}
