"""A mail → its interaction (`channel_email.translate`), without infrastructure."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.datastructures import FormData

from channel_email.mailgun import parse_route_post
from channel_email.mime import first_address, parse_mime
from channel_email.translate import translate
from hilo.contract import MessageExchanged

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PEPPER = b"pepper" * 6
REPLY = (Path(__file__).parents[1] / "samples" / "reply_with_attachment.eml").read_bytes()


def subject_of(raw: bytes) -> str | None:
    payload = translate(parse_mime(raw), NOW, "t", PEPPER).payload
    assert isinstance(payload, MessageExchanged)
    return payload.subject


@pytest.mark.parametrize(
    "header",
    [
        b"=?utf-8?q?Refund=0D=0ABcc:_everyone@example.com?=",
        b"=?utf-8?b?UmVmdW5kDQpCY2M6IGV2ZXJ5b25lQGV4YW1wbGUuY29t?=",
        b"Refund\r\n  Bcc: everyone@example.com",
    ],
)
def test_a_subject_that_decodes_with_line_breaks_is_recorded_on_one_line(header: bytes) -> None:
    """An encoded `=0D=0A` decodes to a line break; the journey shows the subject as a heading
    and the desk replies `Re:` it, where a break would start another mail header."""
    raw = REPLY.replace(b"Subject: Re: Your order ORD-1001", b"Subject: " + header)
    assert raw != REPLY

    assert subject_of(raw) == "Refund Bcc: everyone@example.com"


def test_a_subject_of_only_whitespace_is_no_subject() -> None:
    raw = REPLY.replace(b"Subject: Re: Your order ORD-1001", b"Subject: =?utf-8?q?_=0D=0A_?=")

    assert subject_of(raw) is None


def test_a_mailgun_routes_subject_with_line_breaks_is_recorded_on_one_line() -> None:
    """Mailgun posts the subject decoded: the same line breaks come in its `subject` field."""
    form = FormData(
        [
            ("sender", "ana@example.com"),
            ("subject", "Refund\r\n\tplease"),
            ("body-plain", "Where is it?"),
            ("Message-Id", "<m1@mail.example.com>"),
        ]
    )
    payload = translate(parse_route_post(form), NOW, "t", PEPPER).payload

    assert isinstance(payload, MessageExchanged)
    assert payload.subject == "Refund please"


def test_message_ids_longer_than_the_contract_holds_are_cut_saying_so() -> None:
    """No header limits a Message-ID: one past 500 characters failed the contract and the mail
    was refused for good (406, lost)."""
    long_id = "x" * 600 + "@mail.example.com"
    raw = REPLY.replace(b"<CAF=reply-2@mail.example.com>", f"<{long_id}>".encode())
    raw = raw.replace(b"<support-reply-1@shop.example.com>", f"<r{long_id}>".encode())
    raw = raw.replace(b"<CAF=first-1@mail.example.com>", f"<t{long_id * 2}>".encode())
    assert raw.count(long_id.encode()) == 5, "the thread root holds it twice"

    published = translate(parse_mime(raw), NOW, "t", PEPPER)

    payload = published.payload
    assert isinstance(payload, MessageExchanged)
    assert payload.provider_message_id == long_id[:500]
    assert sorted(a.field for a in published.adjustments) == [
        "conversation.thread",
        "payload.provider_message_id",
        "payload.reply_to_provider_message_id",
    ]


@pytest.mark.parametrize(
    ("header", "sender"),
    [
        ("ana@home.example <ana@work.example>", "ana@work.example"),
        ("Ana @ ACME <ana@example.com>", "ana@example.com"),
        ("victim@example.com <me@mine.example>", "me@mine.example"),
        ("<victim@example.com> <me@mine.example>", "me@mine.example"),
        ("me@mine.example (see <victim@example.com>)", "me@mine.example"),
        ('"Ana <fake@x.example>" <real@y.example>', "real@y.example"),
        ("García, Ana <ana@x.example>", "ana@x.example"),
        ("ana@x.example", "ana@x.example"),
    ],
)
def test_the_sender_is_the_address_in_angle_brackets_whatever_the_name_holds(
    header: str, sender: str
) -> None:
    """Mailgun passes `from` decoded: a display name holding an `@` read as an address of its
    own, which filed the mail under someone else's email (a sender passing DMARC can name a
    victim there) or refused it for good."""
    assert first_address(header) == sender


def test_a_mail_of_more_parts_than_any_mail_carries_is_refused_before_parsing() -> None:
    """150,000 one-byte parts took 50 s of CPU to parse, past the route's deadline: a 500 that
    Mailgun posted again seven times. Refused as unreadable (406 to Mailgun) at once."""
    parts = b"".join(b"--b\nContent-Type: text/plain\n\nx\n" for _ in range(150_000))
    raw = REPLY.split(b"MIME-Version")[0] + (
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n' + parts + b"--b--\n"
    )

    with pytest.raises(ValueError, match="more than 5000 MIME parts"):
        parse_mime(raw)
    with pytest.raises(ValueError, match="more than 5000 MIME parts"):
        parse_mime(raw.replace(b"\n", b"\r"))  # the parser takes a lone CR as a line end


def test_a_text_attachment_full_of_sql_comments_is_no_mail_of_many_parts() -> None:
    """`-- ` starts an SQL comment and a signature: no boundary, whatever their number."""
    dump = b"-- comment\nSELECT 1;\n" * 6_000
    raw = REPLY.split(b"MIME-Version")[0] + (
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n--b\n'
        b"Content-Type: text/plain\n\nSee the dump.\n--b\n"
        b'Content-Type: text/plain; name="dump.sql"\nContent-Disposition: attachment\n\n'
        + dump
        + b"--b--\n"
    )

    mail = parse_mime(raw)

    assert [a.filename for a in mail.attachments] == ["dump.sql"]


@pytest.mark.parametrize(
    ("header", "mark"),
    [
        (b"Auto-Submitted: auto-generated", "auto-submitted"),
        (b"Auto-Submitted: Auto-Replied; owner-email=ana@example.com", "auto-submitted"),
        (b"Auto-Submitted: no", None),
        (b"Precedence: auto_reply", "precedence"),
        (b"Precedence: bulk", None),
        (b"Precedence: junk", None),
        (b"Auto-Submitted: auto-forwarded", None),
        (b"Auto-Submitted: auto-notified", "auto-submitted"),
        (b"Precedence: first-class", None),
        (b"X-Autorespond: yes", "x-autorespond"),
        (b"X-Autoreply: yes", "x-autoreply"),
        (b"X-Mailer: Thunderbird", None),
    ],
)
def test_a_mail_marked_automatic_says_which_header_marks_it(
    header: bytes, mark: str | None
) -> None:
    raw = REPLY.replace(b"MIME-Version: 1.0", header + b"\r\nMIME-Version: 1.0")
    assert raw != REPLY
    assert parse_mime(raw).automatic == mark
