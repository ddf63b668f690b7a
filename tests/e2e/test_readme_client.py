"""A plain paho-mqtt client that knows only what the README and docs/protocol.md say."""

from __future__ import annotations

import json
import queue
import uuid

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import System

pytestmark = pytest.mark.e2e


def test_paho_client_logs_in_joins_sends_and_receives(system: System) -> None:
    api = system.api
    httpx.post(f"{api}/v1/users", json={"username": "alice", "password": "correct horse"}).raise_for_status()
    httpx.post(f"{api}/v1/users", json={"username": "bob", "password": "correct horse"}).raise_for_status()
    login = httpx.post(f"{api}/v1/login",
                       json={"username": "alice", "password": "correct horse", "device_id": "phone1"}).json()
    bob = httpx.post(f"{api}/v1/login",
                     json={"username": "bob", "password": "correct horse", "device_id": "phone1"}).json()
    me, dev, token = login["user_id"], login["device_id"], login["token"]
    channel = httpx.post(f"{api}/v1/channels", headers={"Authorization": f"Bearer {token}"},
                         json={"kind": "group", "name": "notes", "members": [bob["user_id"]]}).json()["channel_id"]

    inbox: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
    subscribed: queue.Queue[object] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{me}:{dev}")
    client.username_pw_set(me, token)
    client.on_message = lambda c, u, msg: inbox.put((msg.topic, json.loads(msg.payload)))
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(codes)
    assert client.connect(login["mqtt"]["host"], login["mqtt"]["port"]) == mqtt.MQTT_ERR_SUCCESS
    client.loop_start()
    try:
        client.subscribe([(f"dev/{me}/{dev}/ack", 1), (f"ch/{channel}", 1)])
        codes = subscribed.get(timeout=10)
        assert [c.value for c in codes] == [1, 1]  # type: ignore[attr-defined]
        cmid = uuid.uuid4().hex
        client.publish(f"in/{me}/{dev}/{channel}", json.dumps({"cmid": cmid, "kind": "text", "body": "hi"}), qos=1)
        got = dict(inbox.get(timeout=10) for _ in range(2))
    finally:
        client.loop_stop()
        client.disconnect()

    ack, message = got[f"dev/{me}/{dev}/ack"], got[f"ch/{channel}"]
    assert ack["ok"] is True
    assert ack["cmid"] == cmid
    assert ack["seq"] == 1
    assert message["body"] == "hi"
    assert message["sender"] == me
    assert message["id"] == ack["id"]
    history = httpx.get(f"{api}/v1/channels/{channel}/messages",
                        headers={"Authorization": f"Bearer {bob['token']}"}).json()
    # History and the live stream share one shape; history adds the message's folded state.
    assert [{k: v for k, v in m.items() if k != "state"} for m in history["messages"]] == [message]
    assert history["messages"][0]["state"]["body"] == "hi"
