"""A broker restarted without its store (persistence off, as in many mosquitto images, or its
file lost): the events it held for the daemon's session are gone, and the daemon must find what
they asked for by itself, at once rather than at the next reconcile interval."""

from __future__ import annotations

from tests.support.daemon import DESTINATIONS, wait_for
from tests.support.scenarios import missing_at, push_and_publish, tiny_images
from tests.support.stack_fixtures import StackFactory

# A push reaches both destinations in well under a second, and a pass over one repository takes
# about as long; 30 s covers a loaded 2-core machine and is far below the reconcile interval the
# stack keeps (the daemon's default, 900 s), which is when the push would land otherwise.
LANDS_WITHIN_SECONDS = 30.0


def test_a_push_whose_event_the_broker_lost_lands_at_once(stack_factory: StackFactory) -> None:
    """The daemon is down while a push's event waits at the broker for its persistent session;
    the broker restarts without its store and the event is lost: the restarted daemon reports
    mqtt_session_lost and reconciles at once, and the push is at every destination within
    seconds."""
    stack = stack_factory(notifications=False)
    first, lost = tiny_images(2, repository="prod/store", prefix="s", seed=41)
    urls = [stack.registries[name].url for name in DESTINATIONS]
    push_and_publish(stack.source.url, stack.broker.port, [first])
    wait_for(
        lambda: not any(missing_at(url, [first]) for url in urls),
        timeout=LANDS_WITHIN_SECONDS, what="the first push at every destination",
    )  # fmt: skip
    stack.daemon.stop()
    push_and_publish(stack.source.url, stack.broker.port, [lost])  # held for the session
    stack.broker.stop()
    for stored in (stack.broker.folder / "data").iterdir():
        stored.unlink()
    stack.broker.start()
    stack.daemon.start()
    wait_for(
        lambda: not any(missing_at(url, [lost]) for url in urls),
        timeout=LANDS_WITHIN_SECONDS, what="the push whose event was lost at every destination",
    )  # fmt: skip
    assert stack.daemon.events("mqtt_session_lost"), "the lost session was not reported"
