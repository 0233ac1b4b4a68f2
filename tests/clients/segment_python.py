#!/usr/bin/env python3
"""Drives the real Segment Python SDK (PyPI `segment-analytics-python==2.4.0`) against a
Portrait server. Run by crates/cli/tests/clients.rs, which then checks what the server stored.

Environment:
  PORTRAIT_HOST       base URL of the server, e.g. http://127.0.0.1:7070 (the SDK adds /v1/batch)
  PORTRAIT_WRITE_KEY  write key of the source to send as
  PORTRAIT_TAG        tag put into every id, so each client's data is recognisable (default "py")

The scenario (the same in every client script):
  user 1: anonymous track + page, identify with traits (phone, email, ...), alias linking the
          anonymous id to the user id, track, page, group          -> 7 events, one profile
  user 2: anonymous track, identify carrying both anonymousId and userId, screen
                                                                   -> 3 events, one profile
User 1 goes through the module-level client (async consumer thread, gzip bodies, several
batches); user 2 through a second Client in sync_mode (one uncompressed request per call).
Exits non-zero if the SDK reported any delivery error.
"""

import os
import sys

import segment.analytics as analytics
from segment.analytics import Client

host = os.environ["PORTRAIT_HOST"]
write_key = os.environ["PORTRAIT_WRITE_KEY"]
tag = os.environ.get("PORTRAIT_TAG", "py")

errors = []


def on_error(error, items):
    errors.append(error)
    print(f"segment sdk error: {error!r} ({len(items)} messages)", file=sys.stderr)


# --- user 1: module-level client, asynchronous consumer, gzip --------------------------
analytics.write_key = write_key
analytics.host = host
analytics.gzip = True
analytics.on_error = on_error
analytics.max_retries = 2
analytics.sync_mode = False

user1 = f"u-{tag}-1"
anon1 = f"a-{tag}-1"

analytics.track(
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
analytics.page(anonymous_id=anon1, name="Home", properties={"path": "/", "title": "首页"})
analytics.flush()  # a first gzip batch: the two anonymous events
analytics.identify(
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
analytics.alias(previous_id=anon1, user_id=user1)
analytics.track(
    user1,
    "Order Completed",
    {
        "order_id": "O-1001",
        "revenue": 199.9,
        "currency": "CNY",
        "products": [{"sku": "SKU-1", "quantity": 2, "price": 99.5}],
    },
)
analytics.page(user1, category="Shop", name="Checkout", properties={"path": "/checkout"})
analytics.group(user1, f"g-{tag}")
analytics.flush()
analytics.shutdown()

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
    print(f"segment sdk error (sync): {e!r}", file=sys.stderr)

if errors:
    print(f"segment_python: {len(errors)} delivery error(s)", file=sys.stderr)
    sys.exit(1)
print("segment_python: 10 messages delivered")
