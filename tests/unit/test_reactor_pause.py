"""pynetdicom's association reactor must not take a DIMSE message while a send_*() has
paused it (lucent.net.transport patches DIMSEServiceProvider.get_msg).

The race it closes (outside probe: 3 of 27 C-MOVEs of 299 instances stalled 30 s and then
failed every remaining sub-operation): the reactor passes its pause checkpoint, a sender
clears the checkpoint and sees ``_is_paused`` still True, sends its request, and the
reactor's next non-blocking get_msg takes the response. Timing cannot be forced in a test,
so this checks the rule itself on a real Association and DIMSE provider."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.association import Association

from lucent.net import transport


def test_the_reactor_gets_nothing_while_paused_and_the_sender_gets_its_message() -> None:
    transport.install()
    assoc = Association(AE(), "requestor")
    provider = assoc.dimse
    provider.msg_queue.put((1, "C-STORE-RSP"))
    assoc._reactor_checkpoint.clear()  # a send_c_store() paused the reactor
    assert provider.get_msg(block=False) == (None, None)  # the reactor's poll
    assert provider.get_msg(block=True) == (1, "C-STORE-RSP")  # the sender's wait
    provider.msg_queue.put((1, "C-FIND-RQ"))
    assoc._reactor_checkpoint.set()  # running again: requests are the reactor's
    assert provider.get_msg(block=False) == (1, "C-FIND-RQ")
