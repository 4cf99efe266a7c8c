"""``gateway serve | keys create|list|revoke | token``: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from gateway.config import Config, ConfigError, load_config


def _keystore(cfg: Config):  # type: ignore[no-untyped-def]
    from gateway.store.keys import KeyStore

    return KeyStore(cfg.data_path / "gateway.db")


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
    store = _keystore(cfg)
    if args.keys_cmd == "create":
        record, key = store.create(args.name)
        print(key)
        print(f"# key id {record.key_id}: store the key now, it is not shown again",
              file=sys.stderr)
    elif args.keys_cmd == "list":
        for k in store.list():
            made = datetime.fromtimestamp(k.created_at, UTC).isoformat(timespec="seconds")
            state = "revoked" if k.revoked_at else "active"
            print(f"{k.key_id}\t{state}\t{made}\t{k.name}")
    elif args.keys_cmd == "revoke":
        if not store.revoke(args.key_id):
            print(f"no active key {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    store.close()
    return 0


def _cmd_token(cfg: Config, args: argparse.Namespace) -> int:
    """Mint a session token locally with an API key (handy for trying the kiosk/client)."""
    from gateway.api.auth import Authenticator, AuthError, load_token_secret

    store = _keystore(cfg)
    auth = Authenticator(cfg, store, load_token_secret(cfg))
    try:
        key = auth.api_key(args.api_key)
    except AuthError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(json.dumps(auth.mint(key, args.ttl, {})))
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
    ks.add_parser("list", help="list keys (never the secrets)")
    kr = ks.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id")
    t = sub.add_parser("token", help="mint a short-lived session token")
    t.add_argument("--api-key", required=True)
    t.add_argument("--ttl", type=int)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    handlers = {"serve": _cmd_serve, "keys": _cmd_keys, "token": _cmd_token}
    return handlers[args.cmd](cfg, args)


if __name__ == "__main__":
    sys.exit(main())
