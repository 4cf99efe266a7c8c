"""``gateway serve | keys create|list|revoke | users create | oauth-clients create | eval``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from gateway.config import Config, load_config
from gateway.errors import ConfigError


async def _with_db(cfg: Config, job: Callable[[Any], Awaitable[int]]) -> int:
    from gateway.store.assistants import ensure_default_assistant
    from gateway.store.db import Database

    db = Database.from_config(cfg)
    try:
        await db.migrate()
        await ensure_default_assistant(db, cfg)
        return await job(db)
    finally:
        await db.close()


def _cmd_serve(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.server import serve

    overrides = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    serve(cfg.replace(server=overrides) if overrides else cfg)
    return 0


def _cmd_keys(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.store.keys import KeyStore

    async def job(db: Any) -> int:
        store = KeyStore(db)
        if args.keys_cmd == "create":
            record, key = await store.create(args.name, assistant_id=args.assistant,
                                             tier=args.tier)
            print(key)
            scope = f"assistant {args.assistant}" if args.assistant else "all assistants (admin)"
            print(f"# key id {record.key_id} for {scope}: store the key now, it is not "
                  "shown again", file=sys.stderr)
        elif args.keys_cmd == "list":
            for k in await store.list():
                made = datetime.fromtimestamp(k.created_at, UTC).isoformat(timespec="seconds")
                state = "revoked" if k.revoked_at else "active"
                print(f"{k.key_id}\t{state}\t{made}\t{k.assistant_id or '*'}\t{k.name}")
        elif args.keys_cmd == "revoke":
            if not await store.revoke(args.key_id):
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
            if cfg.cluster.enabled:  # the nodes end the sessions opened with it
                from gateway.cluster.bus import publish_once
                from gateway.cluster.events import KEY_REVOKED, Event

                if not await publish_once(cfg, Event(KEY_REVOKED, args.key_id, "cli")):
                    print("# Redis unreachable: live sessions opened with it were not "
                          "told to end", file=sys.stderr)
        return 0

    return asyncio.run(_with_db(cfg, job))


def _read_password(confirm: bool = True) -> str:
    """From a terminal: prompted twice; otherwise the first line of stdin."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != password:
        raise ValueError("the passwords differ")
    return password


def _cmd_users(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.store.users import StoreError, create_user

    try:
        password = _read_password()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1

    async def job(db: Any) -> int:
        try:
            user = await create_user(db, args.username, password)
        except StoreError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"created user {user.username} ({user.id})")
        return 0

    return asyncio.run(_with_db(cfg, job))


def _cmd_oauth_clients(cfg: Config, args: argparse.Namespace) -> int:
    from gateway.store.users import StoreError, create_client

    async def job(db: Any) -> int:
        try:
            client = await create_client(db, args.client_id, args.redirect_uri, args.name)
        except StoreError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"created OAuth client {client.client_id} -> {', '.join(client.redirect_uris)}")
        return 0

    return asyncio.run(_with_db(cfg, job))


def _cmd_eval(cfg: Config, args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from gateway.evaluation.runner import EvalError, Options, run
    from gateway.evaluation.scenario import ScenarioError, load

    url = args.url or f"http://127.0.0.1:{cfg.server.port}"
    out = Path(args.out or f"eval-report-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    opts = Options(url.rstrip("/"), args.api_key or os.environ.get("GATEWAY_EVAL_API_KEY"),
                   out, args.assistant, args.keep, tuple(args.only or ()))
    try:
        summary = asyncio.run(run(load(args.scenarios), opts,
                                  lambda line: print(line, file=sys.stderr, flush=True)))
    except (ScenarioError, EvalError) as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 2
    lat, ok = summary["latency_ms"], summary["correct_answers"]
    print(f"{out / 'report.md'}: correct {ok['passed']}/{ok['total']}, latency p50 "
          f"{lat['p50']} ms p95 {lat['p95']} ms")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__)
    p.add_argument("--config", help="TOML config file (default: $GATEWAY_CONFIG or built-ins)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    k = sub.add_parser("keys", help="manage API keys")
    ks = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ks.add_parser("create", help="create a key and print it once")
    kc.add_argument("--name", default="default")
    kc.add_argument("--assistant", help="scope the key to one assistant (default: admin key)")
    kc.add_argument("--tier", choices=["free", "basic", "pro", "enterprise"])
    ks.add_parser("list", help="list keys (never the secrets)")
    kr = ks.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id")
    u = sub.add_parser("users", help="manage users who sign in on the OAuth page")
    us = u.add_subparsers(dest="users_cmd", required=True)
    uc = us.add_parser("create", help="create a user (password from the prompt or stdin)")
    uc.add_argument("--username", required=True)
    o = sub.add_parser("oauth-clients", help="manage OAuth clients (apps using PKCE)")
    os_ = o.add_subparsers(dest="clients_cmd", required=True)
    oc = os_.add_parser("create", help="register a public client and its redirect URIs")
    oc.add_argument("--client-id", required=True)
    oc.add_argument("--redirect-uri", required=True, action="append",
                    help="exact redirect URI (repeat for several)")
    oc.add_argument("--name", default="")
    e = sub.add_parser("eval", help="play scripted callers against a running gateway and "
                       "write a report (docs/evaluation.md)")
    e.add_argument("scenarios", nargs="?", default="eval/scenarios/default.toml",
                   help="scenario set (TOML; default: %(default)s)")
    e.add_argument("--url", help="the gateway (default: http://127.0.0.1:<server.port>)")
    e.add_argument("--api-key", help="an admin API key (`gateway keys create`); or "
                   "$GATEWAY_EVAL_API_KEY")
    e.add_argument("--out", help="report folder (default: eval-report-<time>)")
    e.add_argument("--assistant", help="use this assistant as it is (no new assistant, "
                   "no import)")
    e.add_argument("--keep", action="store_true", help="keep the assistant made for the run")
    e.add_argument("--only", action="append", help="run only this kind or id (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    handlers = {"serve": _cmd_serve, "keys": _cmd_keys, "users": _cmd_users,
                "oauth-clients": _cmd_oauth_clients, "eval": _cmd_eval}
    return handlers[args.cmd](cfg, args)


if __name__ == "__main__":
    sys.exit(main())
