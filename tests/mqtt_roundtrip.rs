//! Property-based round trips: what the builders and the encoder produce, the parsers and
//! the decoder read back unchanged, for arbitrary ids, properties, topics and payloads.

use proptest::prelude::*;

use tether::mqtt::codec::{self, Decoded, Packet};
use tether::mqtt::properties::{self, parse_bag, PropertyBag};
use tether::mqtt::{dps, topics};

/// IoT Hub's id characters that a topic name can carry (all but '+' and '#').
fn device_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9\\-.%_*?!(),:;=@$']{1,128}").unwrap()
}

fn request_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9\\-_.~]{1,40}").unwrap()
}

fn properties_list() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    proptest::collection::vec(
        (
            any::<String>().prop_filter("names are not empty", |k| !k.is_empty()),
            proptest::option::of(any::<String>()),
        ),
        0..8,
    )
}

fn decoded(bag: &str) -> Vec<(String, Option<String>)> {
    parse_bag(bag)
        .map(|p| {
            let p = p.expect("a built bag parses");
            (p.decoded_key().unwrap(), p.decoded_value().unwrap())
        })
        .collect()
}

proptest! {
    #[test]
    fn percent_encoding_round_trips(text in any::<String>()) {
        let enc = properties::encode(&text);
        prop_assert!(enc.bytes().all(|b| properties::is_unreserved(b) || b == b'%'
            || b.is_ascii_hexdigit()));
        prop_assert_eq!(properties::decode(&enc).unwrap(), text);
    }

    #[test]
    fn telemetry_topic_round_trips(
        device in device_id(),
        module in proptest::option::of(device_id()),
        props in properties_list(),
    ) {
        let mut bag = PropertyBag::new();
        for (k, v) in &props {
            bag.append(k, v.as_deref());
        }
        let topic = topics::telemetry_topic(&device, module.as_deref(), bag.as_str()).unwrap();
        let prefix = match &module {
            Some(m) => format!("devices/{device}/modules/{m}/messages/events/"),
            None => format!("devices/{device}/messages/events/"),
        };
        prop_assert!(topic.starts_with(&prefix));
        prop_assert_eq!(decoded(&topic[prefix.len()..]), props);
    }

    #[test]
    fn c2d_topic_round_trips(device in device_id(), props in properties_list()) {
        let mut bag = PropertyBag::new();
        for (k, v) in &props {
            bag.append(k, v.as_deref());
        }
        let topic = format!("devices/{device}/messages/devicebound/{}", bag.as_str());
        let parsed = topics::parse_c2d_topic(&topic).unwrap();
        prop_assert_eq!(parsed.device_id, device.as_str());
        prop_assert_eq!(decoded(parsed.properties), props);
    }

    #[test]
    fn client_id_and_username_round_trip(
        device in device_id(),
        module in proptest::option::of(device_id()),
        agent in proptest::option::of(".{1,40}"),
    ) {
        let id = topics::client_id(&device, module.as_deref()).unwrap();
        let mut parts = id.splitn(2, '/');
        prop_assert_eq!(parts.next(), Some(device.as_str()));
        prop_assert_eq!(parts.next(), module.as_deref());
        let options = topics::UsernameOptions { client_type: agent.as_deref(), ..Default::default() };
        let user = topics::username("hub.azure-devices.net", &device, module.as_deref(), &options).unwrap();
        // Ids may hold `?`; the encoded query never holds `/` or `?`, so split at the last `/?`.
        let (path, query) = user.rsplit_once("/?").unwrap();
        prop_assert_eq!(path, format!("hub.azure-devices.net/{id}"));
        let q = decoded(query);
        prop_assert_eq!(&q[0], &("api-version".to_owned(), Some("2021-04-12".to_owned())));
        prop_assert_eq!(q.get(1).and_then(|p| p.1.clone()), agent);
    }

    #[test]
    fn twin_and_method_topics_round_trip(
        rid in request_id(),
        status in any::<u16>(),
        version in proptest::option::of("[0-9]{1,10}"),
        name in "[^/?#+&]{1,40}",
    ) {
        let get = topics::build_string(|s| topics::twin_get_topic_to(s, &rid)).unwrap();
        prop_assert_eq!(get, format!("$iothub/twin/GET/?$rid={rid}"));
        let reply = match &version {
            Some(v) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={v}"),
            None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
        };
        prop_assert_eq!(
            topics::parse_twin_topic(&reply).unwrap(),
            topics::TwinTopic::Response { status, request_id: &rid, version: version.as_deref() }
        );
        let request = format!("$iothub/methods/POST/{name}/?$rid={rid}");
        let m = topics::parse_method_request_topic(&request).unwrap();
        prop_assert_eq!((m.name, m.request_id), (name.as_str(), rid.as_str()));
        let res = topics::build_string(|s| topics::method_response_topic_to(s, status, m.request_id)).unwrap();
        prop_assert_eq!(res, format!("$iothub/methods/res/{status}/?$rid={rid}"));
    }

    #[test]
    fn dps_reply_topics_parse_in_any_order(
        rid in request_id(),
        status in any::<u16>(),
        retry in proptest::option::of(any::<u32>()),
        retry_first in any::<bool>(),
    ) {
        let mut params = vec![format!("$rid={rid}")];
        if let Some(r) = retry {
            params.push(format!("retry-after={r}"));
        }
        if retry_first {
            params.reverse();
        }
        let topic = format!("$dps/registrations/res/{status}/?{}", params.join("&"));
        let r = dps::parse_response_topic(&topic).unwrap();
        prop_assert_eq!((r.status, r.request_id, r.retry_after_s), (status, rid.as_str(), retry));
    }

    #[test]
    fn publish_round_trips_through_any_split(
        topic in "[^+#\u{0}]{1,200}",
        payload in proptest::collection::vec(any::<u8>(), 0..5000),
        qos in 0u8..=1,
        pkid in 1u16..,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let pkid = if qos == 0 { 0 } else { pkid };
        let p = codec::Publish { topic: &topic, payload: &payload, qos, pkid, dup: false };
        let mut frame = vec![0u8; p.encoded_len().unwrap()];
        let n = p.encode(&mut frame).unwrap();
        prop_assert_eq!(n, frame.len());
        // The direct PUBLISH writer produces exactly mqttbytes' bytes.
        let mut reference = vec![0u8; n];
        prop_assert_eq!(p.encode_with_mqttbytes(&mut reference).unwrap(), n);
        prop_assert_eq!(&frame, &reference);
        // Feed the frame as it would arrive: in pieces, decoding what has arrived so far.
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(n)).collect();
        points.push(n);
        points.sort_unstable();
        let mut done = false;
        for end in points {
            match codec::decode(&frame[..end], codec::DEFAULT_MAX_PACKET_SIZE).unwrap() {
                Decoded::Incomplete { needed } => {
                    prop_assert!(end < n && end + needed <= n);
                }
                Decoded::Complete { packet: Packet::Publish(r), len } => {
                    prop_assert_eq!(end, n);
                    prop_assert_eq!(len, n);
                    prop_assert_eq!((r.topic, r.payload, r.qos, r.pkid), (topic.as_str(), &payload[..], qos, pkid));
                    done = true;
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert!(done);
    }

    #[test]
    fn connect_round_trips_through_mqttbytes(
        client in "[a-zA-Z0-9_/]{0,64}",
        user in proptest::option::of("[ -~]{1,300}"),
        pass in proptest::option::of("[ -~]{1,600}"),
        keep_alive in any::<u16>(),
    ) {
        let pass = if user.is_some() { pass } else { None };
        let c = codec::Connect {
            client_id: &client,
            username: user.as_deref(),
            password: pass.as_deref(),
            keep_alive_s: keep_alive,
            clean_session: true,
            will: None,
        };
        let mut out = vec![0u8; c.encoded_len().unwrap()];
        let n = c.encode(&mut out).unwrap();
        prop_assert_eq!(n, out.len());
        let mut buf = bytes::BytesMut::from(&out[..]);
        let back = mqttbytes::v4::read(&mut buf, 1 << 20).unwrap();
        let mqttbytes::v4::Packet::Connect(back) = back else { panic!("not a CONNECT") };
        prop_assert!(buf.is_empty());
        prop_assert_eq!(back.client_id, client);
        prop_assert_eq!(back.keep_alive, keep_alive);
        prop_assert_eq!(back.login.as_ref().map(|l| l.username.clone()), user);
        prop_assert_eq!(back.login.and_then(|l| Some(l.password).filter(|p| !p.is_empty())), pass);
    }
}
