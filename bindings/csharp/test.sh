#!/usr/bin/env bash
# Builds the C# binding, its examples and tests with mono, starts a local hub (mosquitto
# configured like IoT Hub: TLS 1.2 only with the hub's suites, user name + SAS token as
# password, per-device ACL) and the IoT Hub stand-in (`tether hub`, for DPS-assigned
# devices), runs the test program (its header tests read include/tether.h; its DPS tests run
# the Python tests' scripted DPS through tests/dps_peer.py), then the examples against it with
# mosquitto_sub / mosquitto_pub as the service. A missing peer fails with its package.
#   TETHER_LIB_DIR: the folder holding libtether.so (default: target/debug of this checkout).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export TETHER_LIB_DIR="${TETHER_LIB_DIR:-$root/target/debug}"

need() {
    command -v "$1" >/dev/null || { echo "test.sh: \`$1\` is missing: apt-get install -y $2" >&2; exit 1; }
}
need mcs mono-mcs
need mono mono-runtime
need mosquitto mosquitto
need mosquitto_passwd mosquitto
need mosquitto_sub mosquitto-clients
need mosquitto_pub mosquitto-clients
need openssl openssl
need python3 python3
need stdbuf coreutils
need tinyproxy tinyproxy

"$here/build.sh"
build="$here/build"

work="$(mktemp -d)"
broker_pid=""
cleanup() {
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
    [ -n "${standin_pid:-}" ] && kill "$standin_pid" 2>/dev/null && wait "$standin_pid" 2>/dev/null || true
    [ -n "${sub_pid:-}" ] && kill "$sub_pid" 2>/dev/null || true
    [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null || true
    [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null || true
    [ -n "${ex_proxy_pid:-}" ] && kill "$ex_proxy_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Test PKI: a CA and a server certificate for localhost (RSA 2048: the ECDHE-RSA suites).
(
    cd "$work"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
        -subj "/CN=Tether C# Test CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    printf 'extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
        -out server.pem -extfile server.ext 2>/dev/null
)

# The device's SAS token, made with openssl (independently of tether).
device=dev-1
key="NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
expiry=$(( $(date +%s) + 3600 ))
sr="localhost%2Fdevices%2F${device}"
hexkey=$(printf '%s' "$key" | base64 -d | od -An -tx1 | tr -d ' \n')
sig=$(printf '%s\n%s' "$sr" "$expiry" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 \
    | sed -e 's/+/%2B/g' -e 's/\//%2F/g' -e 's/=/%3D/g')
token="SharedAccessSignature sr=${sr}&sig=${sig}&se=${expiry}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
username="localhost/${device}/?api-version=2021-04-12&DeviceClientType=tether%2F${version}"
service_password="service-secret"

mosquitto_passwd -b -c "$work/passwords" "$username" "$token" 2>/dev/null
mosquitto_passwd -b "$work/passwords" service "$service_password" 2>/dev/null
printf 'user %s\ntopic readwrite devices/%s/#\ntopic readwrite $iothub/#\nuser service\ntopic readwrite devices/#\ntopic readwrite $iothub/#\n' \
    "$username" "$device" > "$work/acl"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/mosquitto.conf" <<CONF
user $(id -un)
persistence false
per_listener_settings true
listener $port 127.0.0.1
certfile $work/server.pem
keyfile $work/server.key
cafile $work/ca.pem
tls_version tlsv1.2
ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384
allow_anonymous false
password_file $work/passwords
acl_file $work/acl
log_dest file $work/mosquitto.log
CONF
mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.stderr" &
broker_pid=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
done
python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" \
    || { echo "test.sh: mosquitto did not start"; cat "$work/mosquitto.log"; exit 1; }

# The local IoT Hub stand-in (`tether hub`: mosquitto with the tether-hub plugin, verifying
# real SAS tokens), for the device that DPS assigns in the provisioning tests. Its key is the
# group key's derivation for the registration id, made with openssl (independently of tether).
tether_bin="${TETHER_BIN:-$TETHER_LIB_DIR/tether}"
[ -x "$tether_bin" ] || { echo "test.sh: $tether_bin is missing: cargo build --workspace (or set TETHER_BIN)" >&2; exit 1; }
group_key="8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
registration="sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
group_hex=$(printf '%s' "$group_key" | base64 -d | od -An -tx1 | tr -d ' \n')
dps_key=$(printf '%s' "$registration" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$group_hex" -binary | base64)
cert_key="Y2VydHMgdGVzdCBlbnJvbGxtZW50IGtleSwgdGVzdHMgb25seQ=="
cat > "$work/registry.json" <<JSON
{"hostName": "localhost", "certificateAuthorities": [], "devices": [{"deviceId": "dps-device", "status": "enabled",
 "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "$dps_key", "secondaryKey": "$dps_key"}}}],
 "dps": {"idScope": "0ne0000CE27", "enrollments": [{"registrationId": "cs-cert-device", "deviceId": "cs-cert-device",
  "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "$cert_key"}},
  "clientCertificateIssuancePolicy": {"certificateAuthorityName": "stand-in"}}]}}
JSON
standin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
standin_x509=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
standin_dps=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
standin_ws=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/standin"
"$tether_bin" hub --registry "$work/registry.json" --port "$standin_port" --x509-port "$standin_x509" \
    --dps-port "$standin_dps" --ws-port "$standin_ws" --dir "$work/standin" > "$work/standin.out" 2> "$work/standin.log" &
standin_pid=$!
for _ in $(seq 600); do grep -q '^ready' "$work/standin.out" && break; sleep 0.1; done
grep -q "^ready sas=$standin_port" "$work/standin.out" \
    || { echo "test.sh: tether hub did not get ready"; cat "$work/standin.out" "$work/standin.log"; exit 1; }

# A real HTTP proxy (tinyproxy) with Basic credentials, allowing CONNECT to the stand-in's
# WebSocket port only: the WebSockets-through-a-proxy test goes through it.
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'Port %s\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogLevel Info\nLogFile "%s"\nConnectPort %s\nBasicAuth cs cs-proxy-pass\n' \
    "$proxy_port" "$work/tinyproxy.log" "$standin_ws" > "$work/tinyproxy.conf"
tinyproxy -d -c "$work/tinyproxy.conf" >/dev/null 2>&1 &
proxy_pid=$!
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $proxy_port), 0.2)" 2>/dev/null && break
    sleep 0.1
done

export TETHER_TEST_PORT=$port TETHER_TEST_CA="$work/ca.pem" TETHER_TEST_TOKEN="$token" \
    TETHER_TEST_EXPIRY=$expiry TETHER_TEST_SERVICE_PASSWORD=$service_password \
    TETHER_TEST_SERVER_CERT="$work/server.pem" TETHER_TEST_SERVER_KEY="$work/server.key" \
    TETHER_TEST_HEADER="$root/include/tether.h" TETHER_TEST_CSHARP_DIR="$here" \
    TETHER_TEST_STANDIN_PORT=$standin_port TETHER_TEST_STANDIN_CA="$work/standin/ca.pem" \
    TETHER_TEST_STANDIN_X509=$standin_x509 TETHER_TEST_STANDIN_DPS=$standin_dps \
    TETHER_TEST_STANDIN_LOG="$work/standin.log" TETHER_TEST_STANDIN_WS_PORT=$standin_ws \
    TETHER_TEST_STANDIN_KEY="$dps_key" TETHER_TEST_PROXY_URL="http://cs:cs-proxy-pass@127.0.0.1:$proxy_port" \
    TETHER_TEST_PROXY_LOG="$work/tinyproxy.log"

failed=0
echo "== C# tests (mono)"
(cd "$build" && mono --debug TetherTests.exe "$@") || failed=1

# The examples, configured through the environment like any deployment.
export TETHER_CONNECTION_STRING="HostName=localhost;DeviceId=${device};SharedAccessSignature=${token}"
export TETHER_CA_FILE="$work/ca.pem" TETHER_PORT=$port
svc=(-h localhost -p "$port" --cafile "$work/ca.pem" -u service -P "$service_password" -q 1)
examples_passed=0
examples_failed=0
check() {
    if "$@"; then examples_passed=$((examples_passed + 1)); else examples_failed=$((examples_failed + 1)); failed=1; fi
}

echo "== example SendTelemetry"
example_send() {
    stdbuf -oL mosquitto_sub "${svc[@]}" -v -C 3 -W 30 -t "devices/${device}/messages/events/#" > "$work/telemetry.txt" &
    sub_pid=$!
    sleep 0.5
    (cd "$build" && mono SendTelemetry.exe 3) || { echo "FAIL SendTelemetry exited non-zero"; return 1; }
    wait "$sub_pid" || true
    sub_pid=""
    grep -q 'sequence=2' "$work/telemetry.txt" && grep -q '{"temperature":22}' "$work/telemetry.txt" \
        || { echo "FAIL SendTelemetry: the service saw:"; cat "$work/telemetry.txt"; return 1; }
    echo "ok   example SendTelemetry (3 messages seen by the service)"
}
check example_send

echo "== example C2dMethodsTwin"
example_c2d() {
    stdbuf -oL mosquitto_sub "${svc[@]}" -v -C 1 -W 30 -t '$iothub/methods/res/#' > "$work/methods.txt" &
    sub_pid=$!
    (cd "$build" && stdbuf -oL mono C2dMethodsTwin.exe 2 20) > "$work/example.txt" 2>&1 &
    example_pid=$!
    for _ in $(seq 100); do grep -q '^ready' "$work/example.txt" && break; sleep 0.1; done
    mosquitto_pub "${svc[@]}" -t "devices/${device}/messages/devicebound/color=red" -m 'hello example'
    mosquitto_pub "${svc[@]}" -t '$iothub/methods/POST/blink/?$rid=7' -m '{"times":2}'
    wait "$example_pid" || { echo "FAIL C2dMethodsTwin exited non-zero:"; cat "$work/example.txt"; return 1; }
    wait "$sub_pid" || true
    sub_pid=""
    grep -q '^c2d hello example' "$work/example.txt" && grep -q '^  color=red' "$work/example.txt" \
        && grep -q '^method blink {"times":2}' "$work/example.txt" \
        && grep -qF '$iothub/methods/res/200/?$rid=7 {"method":"blink"}' "$work/methods.txt" \
        || { echo "FAIL C2dMethodsTwin:"; cat "$work/example.txt" "$work/methods.txt"; return 1; }
    echo "ok   example C2dMethodsTwin (C2D message and method answered)"
}
check example_c2d

echo "== example C2dMethodsTwin against the local IoT Hub stand-in (tether hub as the service)"
# With `websockets`: MQTT over WebSockets (the stand-in's --ws-port) through a real proxy
# (tinyproxy, Basic credentials), configured only through the environment.
example_stand_in() {
    local tether="$TETHER_LIB_DIR/tether" mode="${1:-mqtt}" ws_args=() net_env=()
    [ -x "$tether" ] && [ -f "$TETHER_LIB_DIR/libtether_hub.so" ] \
        || { echo "FAIL: needs $tether and libtether_hub.so: cargo build --workspace"; return 1; }
    local host=cs-hub.azure-devices.net key hub_port hub_x509 out
    key=$(printf 'C# example device key, test only' | base64)
    hub_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    hub_x509=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '{"hostName": "%s", "devices": [{"deviceId": "%s", "status": "enabled", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "%s"}}}]}' \
        "$host" "$device" "$key" > "$work/registry.json"
    rm -rf "$work/hub"
    if [ "$mode" = websockets ]; then
        local ws_port ex_proxy
        ws_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        ex_proxy=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        printf 'Port %s\nListen 127.0.0.1\nAllow 127.0.0.1\nLogLevel Info\nLogFile "%s"\nConnectPort %s\nBasicAuth ex ex-pass\n' \
            "$ex_proxy" "$work/ex-proxy.log" "$ws_port" > "$work/ex-proxy.conf"
        tinyproxy -d -c "$work/ex-proxy.conf" >/dev/null 2>&1 &
        ex_proxy_pid=$!
        ws_args=(--ws-port "$ws_port")
        net_env=(TETHER_TRANSPORT=websockets TETHER_PORT="$ws_port" HTTPS_PROXY="http://ex:ex-pass@127.0.0.1:$ex_proxy")
        sleep 0.5
    else
        net_env=(TETHER_PORT="$hub_port")
    fi
    "$tether" hub --registry "$work/registry.json" --port "$hub_port" --x509-port "$hub_x509" \
        "${ws_args[@]}" --dir "$work/hub" > "$work/hub.out" 2> "$work/hub.log" &
    hub_pid=$!
    for _ in $(seq 300); do grep -q '^ready' "$work/hub.out" && break; sleep 0.1; done
    grep -q '^ready' "$work/hub.out" || { echo "FAIL: tether hub did not start:"; cat "$work/hub.log"; return 1; }
    (cd "$build" && TETHER_CONNECTION_STRING="HostName=$host;DeviceId=$device;SharedAccessKey=$key;GatewayHostName=localhost" \
        TETHER_CA_FILE="$work/hub/ca.pem" env "${net_env[@]}" stdbuf -oL mono C2dMethodsTwin.exe 3 30) \
        > "$work/stand-in.txt" 2>&1 &
    example_pid=$!
    for _ in $(seq 100); do grep -q '^ready' "$work/stand-in.txt" && break; sleep 0.1; done
    "$tether" hub c2d --dir "$work/hub" "$device" --property color=red 'hello from the stand-in' >/dev/null
    # The method subscription may still be on its way: IoT Hub answers 404 until it is in place.
    for _ in $(seq 20); do
        out=$("$tether" hub invoke --dir "$work/hub" "$device" blink --payload '{"times":2}' --timeout 10 --json 2>/dev/null) && break
        sleep 0.5
    done
    "$tether" hub twin --dir "$work/hub" "$device" --desired '{"rate":5}' >/dev/null
    wait "$example_pid" || { echo "FAIL C2dMethodsTwin exited non-zero:"; cat "$work/stand-in.txt"; return 1; }
    kill "$hub_pid"; wait "$hub_pid" || true
    hub_pid=""
    grep -q '^c2d hello from the stand-in' "$work/stand-in.txt" && grep -q '^  color=red' "$work/stand-in.txt" \
        && grep -q '^method blink {"times":2}' "$work/stand-in.txt" \
        && grep -q '^desired v2 ' "$work/stand-in.txt" \
        && [ "$out" = '{"payload":{"method":"blink"},"status":200}' ] \
        || { echo "FAIL C2dMethodsTwin against the stand-in ($mode): invoke printed '$out'"; cat "$work/stand-in.txt"; return 1; }
    if [ "$mode" = websockets ]; then
        kill "$ex_proxy_pid"; wait "$ex_proxy_pid" 2>/dev/null || true
        ex_proxy_pid=""
        grep -q "CONNECT localhost:$ws_port" "$work/ex-proxy.log" \
            || { echo "FAIL: the example did not go through the proxy:"; cat "$work/ex-proxy.log"; return 1; }
    fi
    echo "ok   example C2dMethodsTwin against the stand-in over $mode (C2D, method via tether hub invoke, desired patch)"
}
check example_stand_in
echo "== example C2dMethodsTwin over WebSockets through an HTTP proxy, against the stand-in"
check example_stand_in websockets
echo "examples: ${examples_passed} passed, ${examples_failed} failed"
exit $failed
