"""ICE for the WebRTC transport: which host candidates a peer connection offers, and
the STUN/TURN servers it uses.

aiortc builds its aioice ``Connection`` itself, so the host addresses cannot be passed
in; aioice looks them up through the module function ``aioice.ice.get_host_addresses``
(every interface, IPv4 loopback excluded). ``install()`` replaces that function once
with one that honours an allow-list held in a context variable: code that gathers
inside ``allowed_hosts([...])`` (the gateway's answer, a test's own peer) gets only
those addresses, everything else keeps aioice's behaviour. A context variable, not a
global setting, because a test process runs the gateway and its client peer side by
side with different lists.

Filtering at the gatherer, not by editing the SDP: an address left out of the SDP
but still gathered would still have a socket and still send connectivity checks.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import aioice.ice
import ifaddr
from aiortc import RTCIceServer

from gateway.config import WebRTCConfig

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Entries are IP addresses, CIDR networks or interface names (``lo``, ``eth0``)."""

    networks: tuple[IpNetwork, ...]
    interfaces: frozenset[str]
    ipv6: bool = True

    @classmethod
    def parse(cls, entries: Sequence[str], ipv6: bool = True) -> HostPolicy:
        networks: list[IpNetwork] = []
        names: set[str] = set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                names.add(entry.strip())
        return cls(tuple(networks), frozenset(names), ipv6)

    def allows(self, interface: str, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        if ip.version == 6 and not self.ipv6:
            return False
        return interface in self.interfaces or any(ip in net for net in self.networks)

    def addresses(self) -> list[str]:
        found: list[str] = []
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if isinstance(ip.ip, tuple):
                    address, _flow, scope = ip.ip
                    if scope:  # link-local: needs a scope id aioice cannot carry
                        continue
                else:
                    address = ip.ip
                if self.allows(adapter.name, address) and address not in found:
                    found.append(address)
        return found


_policy: contextvars.ContextVar[HostPolicy | None] = contextvars.ContextVar(
    "webrtc_host_policy", default=None)
_aioice_default = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    policy = _policy.get()
    if policy is None:
        return _aioice_default(use_ipv4, use_ipv6)
    versions = {4} if use_ipv4 else set()
    versions |= {6} if use_ipv6 else set()
    return [a for a in policy.addresses() if ipaddress.ip_address(a).version in versions]


def install() -> None:
    """Route aioice's host address lookup through the context's policy (idempotent)."""
    aioice.ice.get_host_addresses = _host_addresses


@contextlib.contextmanager
def allowed_hosts(entries: Sequence[str], ipv6: bool = True) -> Iterator[None]:
    """Gather only these host candidates inside the block (and in tasks it starts).

    An empty list keeps aioice's default (every interface but loopback).
    """
    install()
    token = _policy.set(HostPolicy.parse(entries, ipv6) if entries else None)
    try:
        yield
    finally:
        _policy.reset(token)


def ice_servers(cfg: WebRTCConfig) -> list[RTCIceServer]:
    """The gateway's STUN/TURN servers. aioice uses the first STUN and the first TURN
    entry; an empty list means none at all (aiortc's default would be Google's STUN)."""
    servers = [RTCIceServer(urls=url) for url in cfg.stun_servers]
    servers += [RTCIceServer(urls=url, username=cfg.turn_username or None,
                             credential=cfg.turn_credential or None)
                for url in cfg.turn_servers]
    return servers


def candidate_hosts(sdp: str) -> list[tuple[str, str]]:
    """``(address, type)`` of every ``a=candidate`` line of an SDP (for checks and logs)."""
    out: list[tuple[str, str]] = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) >= 8:
                out.append((parts[4], parts[7]))
    return out
