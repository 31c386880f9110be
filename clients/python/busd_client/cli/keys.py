"""busdctl keys new NAME, busdctl acl [reload]: client keys and busd's permissions.

Exit status (cli/exits.py): 0 done, 1 refused (a key file exists; busd refused a reload, or
runs without authentication), 2 usage, 3 busd could not be reached. The control socket is
found as for every command (cli/locate.py); under --json errors are JSON.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from busd_client.cli import locate
from busd_client.cli.common import add_control, add_json, dump_json, fail
from busd_client.cli.control import unreachable
from busd_client.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from busd_client.control import ControlClient, ControlError, ControlUnavailable
from busd_client.keys import KeyError_, new_key_pair
from busd_protocol.envelope import PUBLISHER_NAME, PUBLISHER_RULE

__all__ = ["register"]


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="make a CURVE key pair for a client identity",
        description="`keys new NAME` writes NAME.key (public: give it to the operator for "
        "busd's keys directory) and NAME.key_secret (mode 0600: the client keeps it; point "
        "BUSD_KEY at it). The server's own pair is made the same way.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="write NAME.key and NAME.key_secret")
    new.add_argument("name", metavar="NAME", help=f"the identity: {PUBLISHER_RULE}")
    new.add_argument("--dir", default=".", help="where to write them (default: here)")
    new.set_defaults(func=run_keys_new)

    acl = subparsers.add_parser(
        "acl",
        help="show the identities busd knows, their permissions and recent denials",
        description="Without ACTION, show what busd loaded from its keys directory and "
        "permissions file. `acl reload` reads both again (as SIGHUP does).",
    )
    acl.add_argument("action", nargs="?", choices=["reload"], metavar="ACTION")
    add_control(acl)
    add_json(acl)
    acl.set_defaults(func=run_acl)


def run_keys_new(args: argparse.Namespace) -> int:
    if PUBLISHER_NAME.fullmatch(args.name) is None:
        return fail(
            args, "usage", f"identity name {args.name!r}: expected {PUBLISHER_RULE}", EXIT_USAGE
        )
    try:
        public, secret = new_key_pair(args.dir, args.name)
    except KeyError_ as exc:
        return fail(args, "refused", str(exc), EXIT_FAILED)
    print(f"public key: {public}\nsecret key: {secret} (mode 0600; keep it private)")
    return EXIT_OK


def run_acl(args: argparse.Namespace) -> int:
    cmd = "trust.reload" if args.action == "reload" else "acl.show"
    try:
        path = locate.control(args)
    except locate.LocateError as exc:
        return fail(args, "usage", str(exc), EXIT_USAGE)
    try:
        with ControlClient(path.value) as client:
            reply = client.call(cmd)
    except ControlUnavailable as exc:
        return fail(args, exc.code, unreachable(exc, path), EXIT_UNREACHABLE)
    except ControlError as exc:
        if exc.code == "unknown_command":
            message = "busd runs without authentication (no curve_secret)"
            return fail(args, "no_authentication", message, EXIT_FAILED)
        return fail(args, exc.code, f"busd refused: {exc.code}: {exc.message}", EXIT_FAILED)
    if args.json:
        print(dump_json(reply))
    elif cmd == "trust.reload":
        revoked = ", ".join(reply["revoked"]) or "none"
        print(f"reloaded: {reply['identities']} identities; revoked: {revoked}")
    else:
        _print_acl(reply)
    return EXIT_OK


def _print_acl(reply: dict[str, Any]) -> None:
    print(f"permissions file: {reply['permissions_file'] or '(none: every key may do all)'}")
    print(f"{'IDENTITY':<24} {'PUBLISH':<32} SUBSCRIBE")
    for name, grant in reply["identities"].items():
        publish = ",".join(grant["publish"]) or "-"
        subscribe = ",".join(grant["subscribe"]) or "-"
        print(f"{name:<24} {publish:<32} {subscribe}")
    denials = reply["recent_denials"]
    if denials:
        print(f"\nrecent denials ({len(denials)}):")
        for d in denials[-20:]:
            print(f"  {d['identity']} {d['what']} {d['topic']}")
    sys.stdout.flush()
