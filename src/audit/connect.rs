//! The device's MQTT CONNECT, as the audit listener sees it after a full handshake: client
//! id, user name shape, api-version and SAS token expiry. The password is read only to find
//! its expiry and resource; the signature never leaves this module and the copy is wiped.

use bytes::BytesMut;
use zeroize::Zeroize;

use super::json_string;
use crate::auth::sas;
use crate::{Code, Error, Result};

/// The largest CONNECT read (IoT Hub's packet limit is 256 KiB; a CONNECT is far smaller).
pub const MAX_CONNECT_LEN: usize = 64 * 1024;

/// What a device's CONNECT says, without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectFacts {
    /// The MQTT client id (IoT Hub: the device id, or `{device}/{module}`).
    pub client_id: String,
    /// The user name as sent (it holds no secret: `{hub}/{device}/?api-version=...`).
    pub username: Option<String>,
    /// Whether the user name has IoT Hub's shape `{host}/{client id}/?api-version=...`.
    pub username_shape_ok: bool,
    /// `api-version` from the user name.
    pub api_version: Option<String>,
    /// What the password is: `sas`, `other` or `none` (X.509 devices send none).
    pub password_kind: &'static str,
    /// The SAS token's resource (`sr`, decoded), when the password is a SAS token.
    pub sas_resource: Option<String>,
    /// The SAS token's expiry, Unix seconds.
    pub sas_expiry_unix: Option<u64>,
    /// Seconds from the audit machine's clock to the expiry (negative: expired).
    pub sas_expires_in: Option<i64>,
    /// Keep-alive, seconds.
    pub keep_alive: u16,
}

/// Decodes a CONNECT from the start of `bytes`. `Ok(None)`: more bytes are needed.
pub fn parse_connect(bytes: &[u8], now_unix: u64) -> Result<Option<ConnectFacts>> {
    let mut buf = BytesMut::from(bytes);
    let packet = mqttbytes::v4::read(&mut buf, MAX_CONNECT_LEN);
    buf.zeroize_bytes();
    let connect = match packet {
        Ok(mqttbytes::v4::Packet::Connect(c)) => c,
        Ok(other) => {
            return Err(Error::new(
                Code::MqttMalformed,
                format!("the device's first MQTT packet is not CONNECT ({other:?})"),
            ))
        }
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => {
            return Err(Error::new(
                Code::MqttMalformed,
                format!("the device's CONNECT is malformed: {e:?}"),
            ))
        }
    };
    let mut facts = ConnectFacts {
        client_id: connect.client_id.clone(),
        username: None,
        username_shape_ok: false,
        api_version: None,
        password_kind: "none",
        sas_resource: None,
        sas_expiry_unix: None,
        sas_expires_in: None,
        keep_alive: connect.keep_alive,
    };
    if let Some(mut login) = connect.login {
        let user = std::mem::take(&mut login.username);
        facts.api_version = user
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("api-version="))
            .map(str::to_owned);
        // {host}/{client id}/?api-version=...
        facts.username_shape_ok = user
            .split_once('/')
            .map(|(host, rest)| {
                !host.is_empty()
                    && rest.starts_with(&format!("{}/?", connect.client_id))
                    && facts.api_version.is_some()
            })
            .unwrap_or(false);
        facts.username = Some(user);
        if login.password.starts_with("SharedAccessSignature ") {
            facts.password_kind = "sas";
            if let Ok(token) = sas::parse(&login.password) {
                facts.sas_resource = Some(token.resource_uri.clone());
                facts.sas_expiry_unix = Some(token.expiry_unix);
                facts.sas_expires_in = Some(token.expiry_unix as i64 - now_unix as i64);
            }
        } else if !login.password.is_empty() {
            facts.password_kind = "other";
        }
        login.password.zeroize();
    }
    Ok(Some(facts))
}

trait ZeroizeBytes {
    fn zeroize_bytes(&mut self);
}

impl ZeroizeBytes for BytesMut {
    fn zeroize_bytes(&mut self) {
        self.as_mut().zeroize();
    }
}

impl ConnectFacts {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        let opt = |v: &Option<String>| v.as_deref().map_or("null".into(), json_string);
        let num = |v: Option<i64>| v.map_or("null".into(), |v| v.to_string());
        format!(
            "{{\"client_id\":{},\"username\":{},\"username_shape_ok\":{},\"api_version\":{},\
             \"password\":\"{}\",\"sas_resource\":{},\"sas_expiry_unix\":{},\
             \"sas_expires_in\":{},\"keep_alive\":{}}}",
            json_string(&self.client_id),
            opt(&self.username),
            self.username_shape_ok,
            opt(&self.api_version),
            self.password_kind,
            opt(&self.sas_resource),
            num(self.sas_expiry_unix.map(|v| v as i64)),
            num(self.sas_expires_in),
            self.keep_alive
        )
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        let shape = if self.username_shape_ok {
            "IoT Hub shape"
        } else {
            "NOT IoT Hub's {hub}/{device}/?api-version=... shape"
        };
        let sas = match (self.password_kind, self.sas_expires_in) {
            ("sas", Some(s)) if s < 0 => format!("SAS token expired {} s ago", -s),
            ("sas", Some(s)) => format!("SAS token expires in {s} s"),
            ("sas", None) => "SAS token unreadable".into(),
            ("other", _) => "password is not a SAS token".into(),
            _ => "no password (X.509 device)".into(),
        };
        format!(
            "mqtt client_id={} username {} api-version={} {sas}",
            self.client_id,
            shape,
            self.api_version.as_deref().unwrap_or("none")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sas::{write_token, Resource, SasKey, MAX_TOKEN_LEN};
    use crate::mqtt::codec::Connect;

    fn connect_bytes(client_id: &str, username: Option<&str>, password: Option<&str>) -> Vec<u8> {
        let c = Connect {
            client_id,
            username,
            password,
            keep_alive_s: 60,
            clean_session: true,
            will: None,
        };
        let mut out = vec![0u8; c.encoded_len().unwrap()];
        c.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn connect_facts_name_the_shape_and_expiry_but_never_the_signature() {
        let key = SasKey::from_base64("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=").unwrap();
        let mut buf = [0u8; MAX_TOKEN_LEN];
        let token = write_token(
            &Resource::device("h.azure-devices.net", "d1").unwrap(),
            &key,
            None,
            1_800_000_600,
            &mut buf,
        )
        .unwrap()
        .to_owned();
        let bytes = connect_bytes(
            "d1",
            Some("h.azure-devices.net/d1/?api-version=2021-04-12"),
            Some(&token),
        );
        assert_eq!(parse_connect(&bytes[..bytes.len() - 1], 0).unwrap(), None);
        let facts = parse_connect(&bytes, 1_800_000_000).unwrap().unwrap();
        assert!(facts.username_shape_ok);
        assert_eq!(facts.api_version.as_deref(), Some("2021-04-12"));
        assert_eq!(facts.sas_expires_in, Some(600));
        assert_eq!(
            facts.sas_resource.as_deref(),
            Some("h.azure-devices.net/devices/d1")
        );
        let sig = token
            .split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        for out in [facts.to_json(), facts.to_text(), format!("{facts:?}")] {
            assert!(!out.contains(sig) && !out.contains("sig="), "{out}");
        }
        assert!(facts.to_text().contains("SAS token expires in 600 s"));
        let expired = parse_connect(&bytes, 1_800_000_700).unwrap().unwrap();
        assert!(expired.to_text().contains("SAS token expired 100 s ago"));
    }

    #[test]
    fn a_wrong_user_name_shape_and_x509_devices_are_reported() {
        let facts = parse_connect(&connect_bytes("d1", Some("d1"), Some("secret")), 0)
            .unwrap()
            .unwrap();
        assert!(!facts.username_shape_ok);
        assert_eq!(facts.password_kind, "other");
        assert!(!facts.to_json().contains("secret"));
        let facts = parse_connect(
            &connect_bytes("d1", Some("h/d1/?api-version=2021-04-12"), None),
            0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (facts.username_shape_ok, facts.password_kind),
            (true, "none")
        );
        let err = parse_connect(&[0x30, 2, 0, 0], 0).unwrap_err();
        assert_eq!(err.code(), Code::MqttMalformed);
    }
}
