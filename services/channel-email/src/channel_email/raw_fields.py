"""A form field's bytes as the provider sent them, for the fields that hold a raw message.

Starlette decodes every form field to text: a multipart field that is not UTF-8 as Latin-1, a
url-encoded one as UTF-8 with replacement characters. A raw MIME message in a field (Mailgun's
`body-mime`, SendGrid's `email`) may be 8-bit in any charset its own headers name, so it is
taken here from the body itself, byte for byte, and given whole to the MIME parser.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header


def raw_field(body: bytes, content_type: str, name: str) -> bytes | None:
    """The bytes of the form field `name` (its first occurrence), or None when it is absent."""
    kind, options = parse_options_header(content_type)
    if kind == b"multipart/form-data" and b"boundary" in options:
        return _multipart_field(body, options[b"boundary"], name.encode())
    if kind == b"application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        return next((value.encode("latin-1") for key, value in pairs if key == name), None)
    return None


def _multipart_field(body: bytes, boundary: bytes, name: bytes) -> bytes | None:
    """The data of the part named `name`, as python-multipart (Starlette's own parser) reads
    it, before any decoding."""
    reader = _PartReader(name)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": reader.on_part_begin,
            "on_header_field": reader.on_header_field,
            "on_header_value": reader.on_header_value,
            "on_header_end": reader.on_header_end,
            "on_part_data": reader.on_part_data,
            "on_part_end": reader.on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return reader.found


class _PartReader:
    """python-multipart's callbacks, keeping the data of the first part named `name`."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.found: bytes | None = None
        self._header = b""
        self._value = b""
        self._ours = False
        self._chunks: list[bytes] = []

    def on_part_begin(self) -> None:
        self._ours = False
        self._chunks = []

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            _, options = parse_options_header(self._value)
            self._ours = self.found is None and options.get(b"name") == self.name
        self._header = self._value = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._ours:
            self._chunks.append(data[start:end])

    def on_part_end(self) -> None:
        if self._ours:
            self.found = b"".join(self._chunks)
