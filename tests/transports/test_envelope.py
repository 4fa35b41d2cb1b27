"""Envelope encoding (transports/base.py): what crosses every transport."""

import math
from collections import OrderedDict

import pytest

from bacalhau_flow.transports.base import Envelope


def test_round_trip_keeps_every_field():
    env = Envelope("bid", {"cpu": 0.1, "image": None, "cmd": ["true"], "n": 2**62, "nested": {"x": [1.5, None]}},
                   sender="n-1")
    back = Envelope.decode(env.encode())
    assert back == env


def test_tuples_arrive_as_lists_and_keys_as_strings():
    back = Envelope.decode(Envelope("ok", {"pair": (1, 2), "by_index": {3: "c"}}).encode())
    assert back.body == {"pair": [1, 2], "by_index": {"3": "c"}}


@pytest.mark.parametrize("body", [
    {"x": [1.0, None, math.nan]},
    {"deep": {"deeper": [{"y": math.inf}]}},
    {"t": (None, -math.inf)},
    {"by_number": {math.nan: "a key"}},
    {"ordered": OrderedDict(a=[{"b": -math.inf}])},  # a dict subclass, as orjson writes it
    {"ok": "text", "none": None, "n": 3, "flag": True, "last": math.nan},
])
def test_non_finite_numbers_anywhere_in_a_body_are_refused(body):
    with pytest.raises(ValueError, match="not JSON compliant"):
        Envelope("bad", body).encode()


def test_what_json_cannot_hold_is_refused():
    with pytest.raises(TypeError):
        Envelope("bad", {"x": object()}).encode()


@pytest.mark.parametrize("wire, error", [
    (b"not json", ValueError),
    (b"[1, 2]", TypeError),
    (b'{"kind": "k", "body": {}, "extra": 1}', TypeError),
    (b'{"kind": "k", "body": {"x": NaN}}', ValueError),
])
def test_a_wire_that_is_not_an_envelope_is_refused(wire, error):
    with pytest.raises(error):
        Envelope.decode(wire)
