"""The examples run as the README shows them, configured by the environment variables,
against a local broker configured like IoT Hub."""

import time

from conftest import DEVICE, run_example
from test_client import TwinService


def test_send_telemetry_example(broker):
    sub = broker.subscribe(f"devices/{DEVICE}/messages/events/#")
    try:
        proc = run_example("send_telemetry.py", broker.env(), "5")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == "sent 5 acked 5"
        got = sub.wait(5)
    finally:
        sub.close()
    assert [p for _, p in got][0] == '{"temperature": 21.5, "seq": 0}'
    assert all("%24.ct=application%2Fjson" in t for t, _ in got)


def test_send_telemetry_example_reports_a_bad_connection_string(broker):
    env = broker.env()
    env["TETHER_CONNECTION_STRING"] = "HostName=localhost"
    proc = run_example("send_telemetry.py", env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "TETHER_RESULT_CONNECTION_STRING_INVALID" in err


def test_c2d_methods_twin_example(broker):
    service = TwinService(broker)
    responses = broker.subscribe("$iothub/methods/res/#")
    proc = run_example("c2d_methods_twin.py", broker.env(), "3")
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while "ready" not in lines and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert "ready" in lines, (lines, proc.stderr.read() if proc.poll() is not None else "")
        assert lines[0].startswith("twin {'desired'")
        assert lines[1] == "reported version 8"
        time.sleep(0.5)  # subscriptions were acknowledged before the twin round trips
        broker.publish(f"devices/{DEVICE}/messages/devicebound/color=red", "hi")
        broker.publish("$iothub/methods/POST/reboot/?$rid=9", '{"now":true}')
        broker.publish("$iothub/twin/PATCH/properties/desired/?$version=5", '{"interval":30}')
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        rest = out.splitlines()
        assert "c2d hi color=red" in rest
        assert 'method reboot {"now":true}' in rest
        assert "desired {'interval': 30}" in rest
        assert responses.wait(1)[0] == ("$iothub/methods/res/200/?$rid=9", '{"done": true}')
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        responses.close()
        service.close()
