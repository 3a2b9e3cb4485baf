"""Ownership of native handles: close() is idempotent, a closed object refuses to work
with a clear error, the garbage collector frees what was not closed, and 10,000
create/free cycles leave no native handle behind."""

import gc

import pytest

import tether

CS = "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="


def test_close_is_idempotent_and_closed_client_raises():
    start = tether.live_handles()
    client = tether.DeviceClient.from_connection_string(CS)
    assert tether.live_handles() == start + 1
    client.close()
    client.close()
    assert client.closed
    assert tether.live_handles() == start
    for use in (lambda: client.send(b"x"), lambda: client.connect(1), lambda: client.poll(0),
                lambda: client.get_twin(1), lambda: client.inflight):
        with pytest.raises(tether.ClosedError) as e:
            use()
        assert e.value.name == "TETHER_RESULT_INVALID_STATE"
        assert "DeviceClient is closed" in e.value.message


def test_context_manager_frees_the_client():
    start = tether.live_handles()
    with tether.DeviceClient.from_connection_string(CS) as client:
        assert tether.live_handles() == start + 1
        assert client.inflight == 0
    assert client.closed and tether.live_handles() == start
    with pytest.raises(tether.ClosedError):
        with client:
            pass


def test_unclosed_client_is_freed_by_the_garbage_collector():
    start = tether.live_handles()
    client = tether.DeviceClient.from_connection_string(CS)
    client.on_message_received = lambda m: None  # a reference cycle through a handler
    del client
    gc.collect()
    assert tether.live_handles() == start


def test_send_while_disconnected_is_queued_at_qos1_and_refused_at_qos0():
    with tether.DeviceClient.from_connection_string(CS) as client:
        mid = client.send(b"queued", properties={"a": "b"})
        assert mid > 0 and client.inflight == 1
        with pytest.raises(tether.TetherError) as e:
            client.send(b"now", qos=0)
        assert e.value.name == "TETHER_RESULT_INVALID_STATE"
        with pytest.raises(tether.TetherError) as e:
            client.send(b"x", qos=2)
        assert e.value.name == "TETHER_RESULT_MQTT_QOS_UNSUPPORTED"


def test_no_native_handle_leaks_over_10000_cycles(pki):
    gc.collect()
    start = tether.live_handles()
    for _ in range(10_000):
        tether.DeviceClient.from_connection_string(CS).close()
    for _ in range(200):  # each builds a TLS configuration, freed after the client took it
        tether.DeviceClient.from_connection_string(CS, ca_file=pki.path("ca.pem")).close()
        tether.parse_connection_string(CS)
    for _ in range(1000):
        tether.DeviceClient.from_connection_string(CS)  # dropped without close()
    gc.collect()
    assert tether.live_handles() == start


def test_failed_creation_leaks_nothing(pki):
    start = tether.live_handles()
    for _ in range(100):
        with pytest.raises(tether.TetherError):
            tether.DeviceClient.from_connection_string("HostName=x", ca_file=pki.path("ca.pem"))
        with pytest.raises(tether.TetherError):
            tether.DeviceClient.from_connection_string(CS, ca_file="/nonexistent/ca.pem")
    assert tether.live_handles() == start
