"""DNS message parser: queries, answers, compression, hostile input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edr.sources.ebpf.dns_wire import Answer, parse_dns, qtype_name, sysmon_query_results
from tests.sources.ebpf.rawrec import dns_message


def test_query() -> None:
    m = parse_dns(dns_message("www.example.org", txid=7, qtype=28))
    assert m is not None
    assert (m.txid, m.is_response, m.qname, m.qtype, m.answers) == (7, False, "www.example.org", 28, ())


def test_response_with_compressed_names() -> None:
    msg = dns_message("a.example", response=True, rcode=0,
                      answers=((5, 10, b"\x01b\xc0\x0e"), (1, 60, bytes([10, 0, 0, 1]))))
    m = parse_dns(msg)
    assert m is not None and m.is_response
    assert m.answers == (Answer(5, 10, "b.example"), Answer(1, 60, "10.0.0.1"))


def test_tcp_length_prefix() -> None:
    msg = dns_message("t.example")
    m = parse_dns(len(msg).to_bytes(2, "big") + msg)
    assert m is not None and m.qname == "t.example"


def test_hostile_messages() -> None:
    loop = bytearray(dns_message("x.example"))
    loop[12:14] = b"\xc0\x0c"  # the name points at itself
    assert parse_dns(bytes(loop)) is None
    assert parse_dns(b"") is None
    assert parse_dns(dns_message("x.example")[:15]) is None
    # answers cut by the bounded capture: the complete ones are kept
    msg = dns_message("c.example", response=True, answers=((1, 5, bytes(4)), (1, 5, bytes(4))))
    m = parse_dns(msg[:-3])
    assert m is not None and len(m.answers) == 1


def test_formatting() -> None:
    assert qtype_name(1) == "A" and qtype_name(4242) == "TYPE4242"
    assert sysmon_query_results((Answer(5, 1, "c.net"), Answer(1, 1, "1.2.3.4"), Answer(28, 1, "::2"))) == (
        "type:  5 c.net;::ffff:1.2.3.4;::2;")


@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    parse_dns(data)
