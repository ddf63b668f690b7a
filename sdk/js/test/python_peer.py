"""A third chat participant for the browser test: a plain Python MQTT client (paho-mqtt + httpx).

Signs up ``argv[2]`` at the API ``argv[1]``, prints one JSON line per event on stdout
(``ready``, ``joined``, ``message``, ``ack``), and answers in the channel: a message containing
``python?`` gets ``hello from python``; ``python, flood N`` gets N numbered messages. Runs until
stdin closes.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
    api, username = sys.argv[1], sys.argv[2]
    password = "correct horse battery"
    httpx.post(f"{api}/v1/users", json={"username": username, "password": password}).raise_for_status()
    login = httpx.post(f"{api}/v1/login",
                       json={"username": username, "password": password, "device_id": "py1"}).json()
    me, dev = login["user_id"], login["device_id"]

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{me}:{dev}")
    client.username_pw_set(me, login["token"])

    def send(channel: str, body: str) -> None:
        payload = {"cmid": uuid.uuid4().hex, "kind": "text", "body": body}
        client.publish(f"in/{me}/{dev}/{channel}", json.dumps(payload), qos=1)

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        c.subscribe([(f"dev/{me}/{dev}/ack", 1), (f"user/{me}/events", 1)])
        say(event="ready", user_id=me)

    def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        if msg.topic.endswith("/events") and data.get("type") == "membership" and data["action"] == "added":
            c.subscribe(f"ch/{data['channel']}", 1)
            say(event="joined", channel=data["channel"])
        elif msg.topic.endswith("/ack"):
            say(event="ack", ok=data["ok"], seq=data.get("seq"))
        elif msg.topic.startswith("ch/"):
            say(event="message", channel=data["channel"], sender=data["sender"], body=data["body"], seq=data["seq"])
            if data["sender"] == me:
                return
            body: str = data["body"]
            if "python?" in body:
                send(data["channel"], "hello from python")
            elif body.startswith("python, flood "):
                for i in range(int(body.rsplit(" ", 1)[1])):
                    send(data["channel"], f"flood {i + 1}")

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(login["mqtt"]["host"], login["mqtt"]["port"])
    client.loop_start()
    sys.stdin.read()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
