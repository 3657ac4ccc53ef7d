"""The transport ceiling: a raw nats-py responder that echoes a fixed reply (queue group)."""

from __future__ import annotations

import argparse
import asyncio
import signal

import nats
import uvloop

from gatehook.transport.lean import settle

REPLY = b'{"request_id":"x","decision":"continue","claims":{},"actions":[],"error":null}'


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--subject", default="gatehook.v1.trigger.*.*.*")
    args = parser.parse_args()
    nc = await nats.connect(args.url)

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(REPLY)

    await nc.subscribe(args.subject, queue="gatehook-workers", cb=on_msg)
    await settle(nc)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    uvloop.run(main())
