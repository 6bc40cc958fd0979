"""Small registries several test modules share: payloads whose bytes need care to stay canonical."""

import msgspec

from eventmig import Registry


def raw_hooks() -> Registry:
    """Hook v1 -> v2, passing an unparsed (msgspec.Raw) body through a typed step."""
    r = Registry()

    @r.schema("Hook", 1)
    class HookV1(msgspec.Struct):
        url: str
        body: msgspec.Raw

    @r.schema("Hook", 2)
    class Hook(msgspec.Struct):
        target: str
        body: msgspec.Raw

    @r.upcaster(rename={"url": "target"})
    def hook_target(e: HookV1) -> Hook:
        return Hook(e.url, e.body)

    return r


def tagged_sets(frozen: bool = False) -> Registry:
    """Tagged v1 (a list) -> v2 (a set, or a frozenset): a head whose fast encoding follows hash order."""
    r = Registry()
    kind = frozenset if frozen else set

    @r.schema("Tagged", 1)
    class TaggedV1(msgspec.Struct):
        tags: list[str]

    @r.schema("Tagged", 2)
    class Tagged(msgspec.Struct):
        tags: frozenset[str] if frozen else set[str]  # type: ignore[valid-type]  (evaluated now: no __future__ import)

    @r.upcaster(convert={"tags": kind})  # a list becomes a set: duplicates go, which the rule says
    def as_set(e: TaggedV1) -> Tagged:
        return Tagged(kind(e.tags))

    return r
