"""Subscriptions: parsing, extractor config and the matching index.

Pure logic, standard library only. Typical use by the gateway:

>>> from rig_actors.subscriptions import (
...     Extractors, SubscriptionIndex, dedupe, parse_subscription_list)
>>> extractors = Extractors.parse({"greeting": {"name": {
...     "stable_field_index": 0, "event": {"json_pointer": "/data/name"},
...     "jwt": {"json_pointer": "/username"}}}})
>>> manual = parse_subscription_list([{"eventType": "greeting"}])
>>> subs = dedupe(extractors.jwt_subscriptions({"username": "joe"}) + manual)
>>> index = SubscriptionIndex(extractors)
>>> index.replace("conn", subs)
>>> index.match("greeting", {"type": "greeting", "data": {"name": "bob"}})
{'conn'}
"""

from .extractors import (
    MISSING,
    ExtractorConfigError,
    Extractors,
    FieldSpec,
    parse_pointer,
    resolve_pointer,
    resolve_tokens,
)
from .index import SubscriptionIndex
from .subscription import (
    Constraint,
    Subscription,
    SubscriptionError,
    dedupe,
    match_key,
    parse_subscription,
    parse_subscription_list,
)

__all__ = [
    "MISSING",
    "Constraint",
    "ExtractorConfigError",
    "Extractors",
    "FieldSpec",
    "Subscription",
    "SubscriptionError",
    "SubscriptionIndex",
    "dedupe",
    "match_key",
    "parse_pointer",
    "parse_subscription",
    "parse_subscription_list",
    "resolve_pointer",
    "resolve_tokens",
]
