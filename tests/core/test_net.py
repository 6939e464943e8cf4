"""Loopback ports for the servers tests and benchmarks start."""

from __future__ import annotations

import socket

import pytest

from core import net
from core.net import PORT_RANGE, free_port


def test_free_ports_lie_outside_the_ephemeral_range_and_can_be_listened_on() -> None:
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40  # at random, not one after another from the same start
    for port in ports:
        assert port in PORT_RANGE
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))
        sock.listen()


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four of five ports held: always the fifth; all five held: one the kernel picks."""
    start = free_port()
    small = range(start, start + 5)
    monkeypatch.setattr(net, "PORT_RANGE", small)
    held = []
    try:
        for port in small:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken by someone else: as good as held
                sock.close()
                continue
            held.append(sock)
        last = held.pop()
        free = last.getsockname()[1]
        last.close()
        assert {free} == {net.free_port() for _ in range(20)}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", free))
            assert net.free_port() not in small
    finally:
        for sock in held:
            sock.close()
