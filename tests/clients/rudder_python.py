#!/usr/bin/env python3
"""Drives the real RudderStack Python SDK (PyPI `rudder-sdk-python==2.1.9`, import
`rudderstack.analytics`) against a Portrait server. Run by crates/cli/tests/clients.rs, which
then checks what the server stored.

Environment:
  PORTRAIT_HOST       base URL of the server, given as the SDK's dataPlaneUrl (it adds /v1/batch)
  PORTRAIT_WRITE_KEY  write key of the source to send as
  PORTRAIT_TAG        tag put into every id (default "rudder-py")

The scenario is the one of segment_python.py (user 1: 7 events, user 2: 3 events). User 1 goes
through the module-level client (consumer thread, gzip, the SDK's default); user 2 through a
second Client in sync_mode without gzip. The SDK adds `channel: "server"` and
`integrations: {"All": true}` to every message. Exits non-zero on any delivery error.
"""

import os
import sys

import rudderstack.analytics as rudder_analytics
from rudderstack.analytics.client import Client

host = os.environ["PORTRAIT_HOST"]
write_key = os.environ["PORTRAIT_WRITE_KEY"]
tag = os.environ.get("PORTRAIT_TAG", "rudder-py")

errors = []


def on_error(error, items):
    errors.append(error)
    print(f"rudder sdk error: {error!r} ({len(items)} messages)", file=sys.stderr)


# --- user 1: module-level client, asynchronous consumer, gzip --------------------------
rudder_analytics.write_key = write_key
rudder_analytics.dataPlaneUrl = host
rudder_analytics.gzip = True
rudder_analytics.on_error = on_error
rudder_analytics.max_retries = 2
rudder_analytics.sync_mode = False

user1 = f"u-{tag}-1"
anon1 = f"a-{tag}-1"

rudder_analytics.track(
    anonymous_id=anon1,
    event="Product Viewed",
    properties={
        "sku": "SKU-1",
        "price": 99.5,
        "currency": "CNY",
        "tags": ["new", "sale"],
        "variant": {"color": "red", "size": "M"},
    },
)
rudder_analytics.page(anonymous_id=anon1, name="Home", properties={"path": "/", "title": "首页"})
rudder_analytics.flush()  # a first gzip batch: the two anonymous events
rudder_analytics.identify(
    user1,
    {
        "name": "张三",
        "email": "Zhang.San@Example.COM",
        "phone": "+86 138-0000-0001",
        "plan": "gold",
        "age": 30,
        "vip": True,
    },
)
rudder_analytics.alias(previous_id=anon1, user_id=user1)
rudder_analytics.track(
    user1,
    "Order Completed",
    {
        "order_id": "O-1001",
        "revenue": 199.9,
        "currency": "CNY",
        "products": [{"sku": "SKU-1", "quantity": 2, "price": 99.5}],
    },
)
rudder_analytics.page(user1, category="Shop", name="Checkout", properties={"path": "/checkout"})
rudder_analytics.group(user1, f"g-{tag}")
rudder_analytics.flush()
rudder_analytics.shutdown()

# --- user 2: a second client in sync_mode, no gzip ------------------------------------
user2 = f"u-{tag}-2"
anon2 = f"a-{tag}-2"
sync = Client(write_key, host=host, sync_mode=True, gzip=False, on_error=on_error, max_retries=2)
try:
    sync.track(anonymous_id=anon2, event="Signup Started", properties={"step": 1})
    sync.identify(user2, {"name": "李四", "email": "li.si@example.com"}, anonymous_id=anon2)
    sync.screen(user2, name="Settings", properties={"tab": "privacy"})
except Exception as e:  # sync_mode raises APIError / connection errors directly
    errors.append(e)
    print(f"rudder sdk error (sync): {e!r}", file=sys.stderr)

if errors:
    print(f"rudder_python: {len(errors)} delivery error(s)", file=sys.stderr)
    sys.exit(1)
print("rudder_python: 10 messages delivered")
