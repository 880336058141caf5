"""Reading an RFC 5322 message with the standard library's `email` package.

Threads follow Message-ID / In-Reply-To / References: the first id of `References` (else
`In-Reply-To`, else the message's own id) names the thread's first message, so every reply,
from either side, lands in the conversation the first message started.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import getaddresses
from html import unescape

from bs4 import BeautifulSoup
from bs4.exceptions import ParserRejectedMarkup

from hilo.contract import rfc2822_time

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")
_PARSER_FAILURES = (IndexError, ValueError, TypeError, AttributeError, LookupError, MessageError)
"""What the standard library's header parser raises on some malformed values (an IndexError on
`Message-ID: <>`, for one) instead of recording a defect."""


@dataclass(frozen=True)
class AttachmentInfo:
    """Recorded by name, type and size; the content is never stored."""

    filename: str | None
    mime_type: str
    size_bytes: int


@dataclass(frozen=True)
class InboundEmail:
    """What Hilo keeps of one inbound message, whichever way it arrived."""

    message_id: str
    sender: str
    subject: str | None
    text: str | None
    date: datetime | None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    attachments: tuple[AttachmentInfo, ...] = field(default_factory=tuple)
    automatic: str | None = None
    """The header that marks the mail as sent by a machine (`automatic_mark`), else None."""

    @property
    def thread_root(self) -> str:
        """The id of the thread's first message."""
        if self.references:
            return self.references[0]
        return self.in_reply_to or self.message_id


AUTOMATIC_HEADERS = ("auto-submitted", "precedence", "x-autoreply", "x-autorespond")
"""What marks a mail no person wrote: RFC 3834's `Auto-Submitted`, and what auto-responders
set where they predate it (`Precedence: auto_reply`, Exchange's and cPanel's `X-Autoreply`,
`X-Autorespond`)."""
_MACHINE_SUBMITTED = frozenset({"auto-replied", "auto-generated", "auto-notified"})
"""RFC 3834's and RFC 5436's values. Others (`auto-forwarded`, which a forwarder may put on
a person's own mail) are no mark: a mail taken for automatic is lost for good."""
_MACHINE_PRECEDENCE = frozenset({"auto_reply"})
"""`bulk` and `junk` are left alone: list servers and group aliases set them on posts people
wrote."""


def automatic_mark(headers: Callable[[str], str]) -> str | None:
    """The header (of `AUTOMATIC_HEADERS`, read through `headers`: '' when absent) that marks a
    mail as an automatic one, an out-of-office reply, a bounce, a mailing: no message from the
    customer. Recorded, it would read in the journey as the customer writing back, and open the
    conversation again for an agent. `Auto-Submitted: no` is a person's mail."""
    submitted = headers("auto-submitted").split(";")[0].split("(")[0].strip().lower()
    if submitted in _MACHINE_SUBMITTED:
        return "auto-submitted"
    if headers("precedence").strip().lower() in _MACHINE_PRECEDENCE:
        return "precedence"
    return next((name for name in AUTOMATIC_HEADERS[2:] if headers(name).strip()), None)


def message_ids(header: str | None) -> tuple[str, ...]:
    """The `<id>` values of a Message-ID, In-Reply-To or References header, without brackets."""
    return tuple(_MESSAGE_ID.findall(header or ""))


def bare_message_id(value: str | None) -> str | None:
    """A message id as the inbound side keeps it: `<a@b>` and `a@b` are both `a@b`; None for
    what no header could carry."""
    if not value:
        return None
    found = message_ids(value) or message_ids(f"<{value.strip()}>")
    return found[0] if found else None


def first_address(header: str | None) -> str:
    """The bare address of a From/Sender header (the display name is not kept). Only a part with
    an `@` is an address: a display name with a comma left unquoted (`García, Ana <ana@...>`,
    as a provider may pass it on decoded) reads as a part of its own. Where the header names an
    address in angle brackets, the last one is it (comments left out): a decoded display name
    may hold an `@` or brackets (`victim@example.com <me@mine.example>`, `<victim@...> <me@...>`)
    and comes before the address, which filed the mail under someone else's email."""
    text = _COMMENT.sub(" ", header or "")
    if bracketed := _ANGLE_ADDRESS.findall(text):
        return str(bracketed[-1])
    for _name, address in getaddresses([text]):
        if "@" in address:
            return address
    raise ValueError("no sender address")


_ANGLE_ADDRESS = re.compile(r"<\s*([^<>\s]+@[^<>\s]+?)\s*>")
_COMMENT = re.compile(r"\([^()]*\)")


MAX_HTML_PARSED = 100_000
"""Characters of HTML given to the HTML parser; a longer body has its tags cut out in one linear
pass instead. The parser costs ~2 µs and several hundred bytes of memory per character: a few MB
of tags (anyone can mail them) would block the service for seconds and exhaust its memory."""


def html_to_text(html: str) -> str:
    """Reduce an HTML body to readable text: tags, styles and scripts out, whitespace folded.

    Markup the parser refuses (anyone can mail it) is still real mail: its tags are cut out
    instead, so the mail is published rather than refused forever by every provider retry. So
    is a body too long to parse (`MAX_HTML_PARSED`).
    """
    text = _text_between_tags(html) if len(html) > MAX_HTML_PARSED else _parsed_text(html)
    lines = (line.strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _parsed_text(html: str) -> str:
    """The text the HTML parser finds outside script, style and head; cut between tags when
    the parser refuses the markup."""
    try:
        soup = BeautifulSoup(html, "html.parser")
    except ParserRejectedMarkup:
        return _text_between_tags(html)
    for hidden in soup(["script", "style", "head"]):
        hidden.decompose()
    return str(soup.get_text("\n"))


def _text_between_tags(html: str) -> str:
    """The text outside tags and outside script, style and head elements, in one pass (no
    backtracking: the input is anyone's mail), stopping once there is more text than an event
    holds (`MAX_TEXT_KEPT`)."""
    kept: list[str] = []
    size = 0
    hidden: str | None = None
    position = 0
    for tag in _TAG.finditer(html):
        if hidden is None and tag.start() > position:
            text = unescape(html[position : tag.start()])
            kept.append(text)
            size += len(text)
            if size > MAX_TEXT_KEPT:
                return "".join(kept)
        position = tag.end()
        name = _TAG_NAME.match(tag.group(0))
        if name is not None and name.group(2).lower() in _HIDDEN:
            hidden = None if name.group(1) == "/" else name.group(2).lower()
        kept.append("\n")
        size += 1
    if hidden is None:
        kept.append(unescape(html[position:]))
    return "".join(kept)


MAX_TEXT_KEPT = 200_000
"""More text than a message event holds (100,000 characters, cut there and noted): cutting tags
stops past it, however long the rest of the body."""
_TAG = re.compile(r"<[^<>]*>")
_TAG_NAME = re.compile(r"<\s*(/?)\s*([A-Za-z0-9]*)")
_HIDDEN = frozenset({"script", "style", "head"})


MAX_PART_LINES = 5_000
"""Lines that may be a part's boundary (`--` and no space after it) a message may hold: far
more parts than any mail carries. Parsing costs about 0.3 ms a part: 150,000 one-byte parts in
a 6 MB mail took 50 s of CPU, past the route's deadline, and Mailgun posted it again seven
times."""
_BOUNDARY_LINE = re.compile(rb"(?:\A|[\r\n])--[^ \t\r\n]")
"""A line starting `--` and a boundary's first character, whatever ends lines (the parser takes
a lone CR as one too); an SQL comment or a signature's `-- ` is not one."""


def _boundary_lines(raw: bytes) -> int:
    """How many lines of `raw` may be boundaries, counted no further than past the limit."""
    count = 0
    for count, _line in enumerate(_BOUNDARY_LINE.finditer(raw), start=1):
        if count > MAX_PART_LINES:
            break
    return count


def parse_mime(raw: bytes) -> InboundEmail:
    """Parse a raw message. Raises `ValueError` when it has no usable sender, or more parts
    than any mail carries."""
    if _boundary_lines(raw) > MAX_PART_LINES:
        raise ValueError(f"more than {MAX_PART_LINES} MIME parts")
    message = message_from_bytes(raw, policy=policy.default)
    own_id = message_ids(_header(message, "Message-ID"))
    return InboundEmail(
        message_id=own_id[0] if own_id else "sha256:" + hashlib.sha256(raw).hexdigest(),
        sender=_sender(message),
        subject=_header(message, "Subject") or None,
        text=_body_text(message),
        date=rfc2822_time(_header(message, "Date") or None),
        in_reply_to=next(iter(message_ids(_header(message, "In-Reply-To"))), None),
        references=message_ids(_header(message, "References")),
        attachments=tuple(_attachments(message)),
        automatic=automatic_mark(lambda name: _header(message, name)),
    )


def _header(message: EmailMessage, name: str) -> str:
    """A header's text ('' when absent); one the parser fails on is read as it came."""
    try:
        return str(message.get(name, ""))
    except _PARSER_FAILURES:
        return _raw_header(message, name)


def _raw_header(message: MIMEPart, name: str) -> str:
    """The header unparsed, its undecodable bytes replaced (they arrive surrogate-escaped)."""
    for key, value in message.raw_items():
        if key.lower() == name.lower():
            return str(value).encode(errors="surrogateescape").decode(errors="replace")
    return ""


def _sender(message: EmailMessage) -> str:
    try:
        addresses: tuple[Address, ...] = getattr(message.get("From"), "addresses", ())
    except _PARSER_FAILURES:
        return first_address(_raw_header(message, "From"))
    for address in addresses:
        if address.addr_spec and "@" in address.addr_spec:
            return address.addr_spec
    raise ValueError("the message has no From address")


def _body_text(message: EmailMessage) -> str | None:
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except _PARSER_FAILURES:  # a part's header the parser fails on: pick the body by hand
        body = _first_text_part(message)
    if body is None:
        return None
    content = decoded_text(body)
    text = html_to_text(content) if body.get_content_subtype() == "html" else content.strip()
    return text or None


def decoded_text(part: MIMEPart) -> str:
    """A text part's content, even when its charset is unknown or lies: such mail is real mail.

    Undecodable text is read as UTF-8 if it is that, else as Latin-1 (which reads any byte).
    """
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):
        content = None
    if isinstance(content, str):
        return content
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _attachments(message: EmailMessage) -> list[AttachmentInfo]:
    try:
        parts: list[MIMEPart] = list(message.iter_attachments())
    except _PARSER_FAILURES:  # a part's header the parser fails on: pick them by hand
        body = _first_text_part(message)
        parts = [p for p in _leaves(message) if p is not body and _is_attached(p)]
    found = []
    for part in parts:
        payload = part.get_payload(decode=True)
        found.append(
            AttachmentInfo(
                filename=_filename(part),
                mime_type=part.get_content_type(),
                size_bytes=len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    return found


def _leaves(part: MIMEPart) -> list[MIMEPart]:
    """The parts of the message's own multipart tree, not what attached messages hold."""
    if part.get_content_maintype() != "multipart":
        return [part]
    return [leaf for sub in part.iter_parts() for leaf in _leaves(sub)]


def _is_attached(part: MIMEPart) -> bool:
    """An attachment, as `iter_attachments` counts them: marked so, or not text at all."""
    return _disposition(part) == "attachment" or part.get_content_maintype() != "text"


def _first_text_part(message: EmailMessage) -> MIMEPart | None:
    """The first inline plain-text part, else the first inline HTML one (attached messages are
    not looked into)."""
    inline = [p for p in _leaves(message) if _disposition(p) != "attachment"]
    for subtype in ("plain", "html"):
        for part in inline:
            if part.get_content_type() == f"text/{subtype}":
                return part
    return None


def _disposition(part: MIMEPart) -> str:
    """`attachment`, `inline` or '' (read from the raw header when the parser fails on it)."""
    try:
        return part.get_content_disposition() or ""
    except _PARSER_FAILURES:
        return _raw_header(part, "Content-Disposition").split(";")[0].strip().lower()


def _filename(part: MIMEPart) -> str | None:
    """The attachment's file name; None when its header is too broken to read one."""
    try:
        return part.get_filename()
    except _PARSER_FAILURES:
        return None
