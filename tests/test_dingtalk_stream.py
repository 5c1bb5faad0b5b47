"""DingTalk stream mode: robot frames handed to the SDK's router reach the same pipeline as HTTP callbacks, are
acked only once stored, and are never handled twice; the connection is opened against the configured API base.
The websocket itself is not started (no network in tests): frames go through ``route_message``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from models.messages import Message
from models.staff import Role
from tests.helpers import deliver_all, settle, staff_member

dingtalk_stream = pytest.importorskip("dingtalk_stream")

from integrations.dingtalk.stream import RUNNING, STREAM, TOPIC  # noqa: E402
from tests.simulators.dingtalk import STREAM_OPEN  # noqa: E402


class SentFrames:
    """Stands in for the websocket the SDK acks on."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send(self, text: str) -> None:
        self.frames.append(json.loads(text))


def frame(data: Any, message_id: str) -> dict[str, Any]:
    return {
        "specVersion": "1.0",
        "type": "CALLBACK",
        "headers": {
            "appId": "sim",
            "connectionId": "conn1",
            "contentType": "application/json",
            "messageId": message_id,
            "time": "1772416800000",
            "topic": TOPIC,
        },
        "data": json.dumps(data, ensure_ascii=False),
    }


async def start(make_settings: Any, start_app: Any, sim: Any) -> tuple[Any, Any, SentFrames]:
    settings = make_settings(dingtalk={**sim.settings(), "stream": True})
    client = await start_app(settings, clock=sim.clock, run_dispatcher=False, run_scheduler=False)
    stream = client.app[STREAM]
    socket = SentFrames()
    stream.websocket = socket
    return client, stream, socket


async def test_a_stream_message_is_stored_once_acked_and_answered(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    client, stream, socket = await start(make_settings, start_app, dingtalk_sim)
    assert RUNNING not in client.app  # a test app (no dispatcher) never connects
    await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP)
    body = dingtalk_sim.message("ding_zhangsan", "帮助", msgid="msgSTREAM1")

    await stream.route_message(frame(body, "frame-1"))
    await stream.route_message(frame(body, "frame-2"))  # redelivered over the stream
    headers, raw = dingtalk_sim.signed_headers(), json.dumps(body).encode()
    resp = await client.post("/dingtalk/callback", data=raw, headers=headers)  # and over HTTP
    assert resp.status == 200
    await settle(client.app)

    assert [(f["code"], f["headers"]["messageId"]) for f in socket.frames] == [(200, "frame-1"), (200, "frame-2")]
    assert await Message.filter(msgid="msgSTREAM1").count() == 1
    [answer] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert answer.via == "session_webhook" and "CRM 助手" in answer.text


async def test_a_malformed_stream_message_is_refused_and_writes_nothing(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    _, stream, socket = await start(make_settings, start_app, dingtalk_sim)
    body = dingtalk_sim.message("ding_zhangsan", "帮助")
    del body["msgId"]
    await stream.route_message(frame(body, "frame-bad"))
    assert [(f["code"], f["headers"]["messageId"]) for f in socket.frames] == [(400, "frame-bad")]
    assert await Message.all().count() == 0


async def test_the_connection_is_opened_at_the_configured_api_base(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    _, stream, _ = await start(make_settings, start_app, dingtalk_sim)
    connection = await asyncio.to_thread(stream.open_connection)  # the SDK calls it synchronously
    assert connection["endpoint"].startswith("ws://") and connection["ticket"]
    [request] = [r for r in dingtalk_sim.requests if r.endpoint == STREAM_OPEN]
    assert request.body["clientId"] == dingtalk_sim.app_key
    assert request.body["subscriptions"] == [{"type": "CALLBACK", "topic": TOPIC}]

    dingtalk_sim.fail(STREAM_OPEN, 1, status=500)
    assert await asyncio.to_thread(stream.open_connection) is None  # the SDK waits and retries


async def test_a_running_server_connects_to_the_stream_and_answers_what_arrives(
    make_settings: Any, start_app: Any, dingtalk_sim: Any
) -> None:
    # A server (dispatcher on) connects by itself: here to the simulator's local websocket, never to DingTalk.
    settings = make_settings(dingtalk={**dingtalk_sim.settings(), "stream": True})
    client = await start_app(settings, clock=dingtalk_sim.clock, run_scheduler=False)
    assert RUNNING in client.app
    await staff_member(name="张三", dingtalk="ding_zhangsan", role=Role.REP)
    body = dingtalk_sim.message("ding_zhangsan", "帮助", msgid="msgWS1")
    ack = await asyncio.wait_for(dingtalk_sim.stream_push(body, "frame-ws-1"), timeout=30)
    assert ack["code"] == 200
    assert json.loads(ack["data"]) == {"response": "OK"}
    await deliver_all(client.app)  # the running dispatcher may be sending it right now
    assert await Message.filter(msgid="msgWS1").count() == 1
    [answer] = dingtalk_sim.delivered_to("ding_zhangsan")
    assert answer.via == "session_webhook"

    await client.close()  # the server stops: the stream task ends with it
    assert client.app[RUNNING].done()
