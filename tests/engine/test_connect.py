"""Connecting to Temporal: a server still starting is waited for; anything else fails at once."""

from __future__ import annotations

import asyncio

import pytest

from engine import temporal
from engine.devserver import free_port
from engine.temporal import connect_address


async def test_nothing_listening_fails_without_waiting_for_a_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only "not healthy yet" is waited out; a refused connection is reported before this long.
    monkeypatch.setattr(temporal, "_STARTING_WITHIN_S", 60.0)
    with pytest.raises(RuntimeError, match="connect"):
        await asyncio.wait_for(connect_address(f"127.0.0.1:{free_port()}"), 30)


async def test_a_running_server_is_connected_to(temporal_address: str) -> None:
    client = await connect_address(temporal_address)
    assert await client.service_client.check_health()
