"""The end-of-day CSV upload: every row validated, good receipts published, bad rows reported.

A receipt is published whole or not at all: one bad row rejects its receipt's other rows too
(each reported with the reason), so a partial upload is never half-published silently.

Cells may be as long as the body allows: the csv module's 128 KiB default would fail the whole
file at one long cell, where the models reject the row (and its receipt) naming the field.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from channel_store.receipts import CSV_COLUMNS, REQUIRED_CSV_COLUMNS, CsvRow, Receipt, Return
from channel_store.translate import customer_policy, from_receipt, from_return
from hilo.channel import Rejected, validation_rejection
from hilo.contract import DropInvalid, Interaction

CELL_LIMIT = 2**31 - 1
"""The csv module's cell limit (process-wide), lifted: `HILO_MAX_BODY_BYTES` bounds a cell."""
csv.field_size_limit(CELL_LIMIT)


@dataclass
class RowProblem:
    row: int
    """Line number in the file (the header is line 1)."""
    store_id: str | None
    receipt_id: str | None
    errors: list[str]


@dataclass
class UploadReport:
    receipts_published: int = 0
    rows_accepted: int = 0
    anonymous_receipts: int = 0
    rejected: list[RowProblem] = field(default_factory=list)


ReceiptIds = tuple[str, str]
"""A receipt of the file: its store and receipt ids, trimmed."""

RECEIPTS_AT_ONCE = 500
"""Receipts translated, then published, at a time: memory holds that many, not the file's."""


@dataclass
class EndOfDayFile:
    """A file whose every row was validated (`read_upload`), its receipts still to translate.

    Only the text and where each good receipt's rows are in it are kept: a validated row took
    about 4 KiB and an event about 10 KiB, so holding the whole file's (a 20 MB file, 1 GB)
    outgrew the container. The good rows are validated again when translated, a chunk of
    receipts at a time (`translated`): no more CPU in all (a 20 MB file, 26.1 s against 26.9 s
    holding everything), in memory of the file's size."""

    text: str
    header: list[str]
    line_starts: array[int]
    """Where each line starts in `text` (line 1 at index 0), and where the text ends."""
    receipts: dict[ReceiptIds, list[int]]
    """The line of each row of each receipt none of whose rows was invalid, in file order."""
    received_at: datetime
    instance: str
    report: UploadReport = field(default_factory=UploadReport)

    def translated(
        self, at_once: int = RECEIPTS_AT_ONCE
    ) -> Iterator[list[tuple[ReceiptIds, Interaction]]]:
        """The receipts' events, `at_once` at a time, each with its receipt's ids; the report
        counts them as they go (`finished` has it whole)."""
        chunk: list[tuple[ReceiptIds, Interaction]] = []
        for trimmed, numbers in self.receipts.items():
            interaction = self._translate(trimmed, numbers)
            if interaction is not None:
                chunk.append((trimmed, interaction))
            if len(chunk) >= at_once:
                self.report.receipts_published += len(chunk)
                yield chunk
                chunk = []
        self.report.receipts_published += len(chunk)
        if chunk:
            yield chunk

    def refuse(self, receipt: ReceiptIds, reason: str) -> None:
        """A receipt Kafka cannot take (larger than a record may be): its rows rejected, the
        rest of the file published."""
        numbers = self.receipts[receipt]
        self.reject(receipt, numbers, reason)
        self.report.rows_accepted -= len(numbers)
        self.report.receipts_published -= 1

    def reject(self, receipt: ReceiptIds, numbers: list[int], reason: str) -> None:
        """Each row of a receipt rejected, for the one `reason`."""
        self.report.rejected.extend(RowProblem(n, *receipt, [reason]) for n in numbers)

    def finished(self) -> UploadReport:
        """The report once every chunk is taken: every rejected row, in file order."""
        self.report.rejected.sort(key=lambda problem: problem.row)
        return self.report

    def _translate(self, trimmed: ReceiptIds, numbers: list[int]) -> Interaction | None:
        """One receipt's event; none for an anonymous sale or a receipt its rows cannot make
        (its rows rejected with the reason)."""
        store_id, receipt_id = trimmed
        rows = [(n, CsvRow.model_validate(record)) for n, record in self._records(numbers)]
        policy = customer_policy()
        try:
            document = _till_document(store_id, receipt_id, rows, policy)
            if isinstance(document, Return):
                interaction = from_return(document, self.received_at, self.instance, policy.dropped)
            else:
                interaction = from_receipt(
                    document, self.received_at, self.instance, policy.dropped
                )
        except (ValidationError, ValueError) as exc:
            reason = (
                validation_rejection(exc).detail if isinstance(exc, ValidationError) else str(exc)
            )
            self.reject(trimmed, numbers, reason)
            return None
        self.report.rows_accepted += len(rows)
        if interaction is None:
            self.report.anonymous_receipts += 1
        return interaction

    def _records(self, numbers: list[int]) -> Iterator[tuple[int, dict[str, str]]]:
        """The rows on these lines, read as the first reading read them (a row is one line:
        a file with one over several was refused)."""
        starts = self.line_starts
        lines = (self.text[starts[n - 1] : starts[n]] for n in numbers)
        return zip(numbers, csv.DictReader(lines, fieldnames=self.header), strict=True)


def read_upload(body: bytes, received_at: datetime, instance: str) -> EndOfDayFile:
    """Validate every row of an upload, noting where each good receipt's rows are; 400 if the
    file itself is unreadable. Rows of one receipt are matched with their ids trimmed, as bad
    rows carry them (`_reference`): `R1` and `R1 ` are one receipt, not two orders each with its
    total. The receipt is published under the trimmed ids too: under its first row's as they
    came, its event id changed with the rows' order, and differed from the till's live `R1`."""
    text = _text(body)
    lines = _NumberedLines(text)
    header, rows = _rows(lines)
    grouped: dict[ReceiptIds, list[int]] = {}
    upload = EndOfDayFile(text, header, lines.starts, {}, received_at, instance)
    rejected = upload.report.rejected
    for number, parsed in rows:
        if isinstance(parsed, RowProblem):
            rejected.append(parsed)
        else:
            trimmed = (parsed.store_id.strip(), parsed.receipt_id.strip())
            grouped.setdefault(trimmed, []).append(number)
    lines.starts.append(len(text))
    bad_receipts = {(problem.store_id, problem.receipt_id) for problem in rejected}
    for trimmed, numbers in grouped.items():
        if trimmed in bad_receipts:
            upload.reject(trimmed, numbers, f"another row of receipt {trimmed[1]} is invalid")
        else:
            upload.receipts[trimmed] = numbers
    return upload


def read_whole(
    body: bytes, received_at: datetime, instance: str
) -> tuple[list[Interaction], UploadReport]:
    """Every receipt's event of a small file at once, and its report."""
    upload = read_upload(body, received_at, instance)
    interactions = [event for chunk in upload.translated() for _, event in chunk]
    return interactions, upload.finished()


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Rejected(400, "invalid_body", "the file is not UTF-8 text") from None


def _rows(
    lines: _NumberedLines,
) -> tuple[list[str], Iterator[tuple[int, CsvRow | RowProblem]]]:
    """The file's columns, and each row validated; 400 for a file whose columns or rows cannot
    be read."""
    reader = csv.DictReader(lines)
    header = list(reader.fieldnames or ())
    lines.row_start()
    if missing := REQUIRED_CSV_COLUMNS - set(header):
        raise Rejected(400, "invalid_body", f"missing columns: {', '.join(sorted(missing))}")
    if unknown := set(header) - set(CSV_COLUMNS):
        raise Rejected(400, "invalid_body", f"unknown columns: {', '.join(sorted(unknown))}")
    return header, _validated(reader, lines)


def _validated(
    reader: csv.DictReader[str], lines: _NumberedLines
) -> Iterator[tuple[int, CsvRow | RowProblem]]:
    for record in reader:
        number = lines.row_start()
        if lines.read > number:
            raise Rejected(400, "invalid_body", _spans(number, lines.read))
        store_id = _reference(record.get("store_id"), 100)
        receipt_id = _reference(record.get("receipt_id"), 200)
        if None in record:
            yield number, RowProblem(number, store_id, receipt_id, ["more cells than columns"])
            continue
        try:
            yield number, CsvRow.model_validate(record)
        except ValidationError as exc:
            problems = validation_rejection(exc).detail.split("; ")
            yield number, RowProblem(number, store_id, receipt_id, problems)


class _NumberedLines:
    """The file's lines as the csv reader takes them, noting the line each row starts on: the
    reader counts the lines it read (`line_num`, where a row ends) and skips blank ones."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))
        self.read = 0
        self.starts = array("q")
        """Where each line read starts in the text."""
        self._offset = 0
        self._start: int | None = None

    def __iter__(self) -> _NumberedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.starts.append(self._offset)
        self._offset += len(line)
        self.read += 1
        if self._start is None and line.strip("\r\n"):
            self._start = self.read
        return line

    def row_start(self) -> int:
        """The line the row just read started on; the next row's is noted afresh."""
        start, self._start = self._start or self.read, None
        return start


def _spans(first: int, last: int) -> str:
    """Why a file with a row over several lines is refused whole: a till's row is one line, and
    a quote left open in a cell takes every line up to the next quote (or the end of the file)
    into it, rows of other receipts too, which would be published without them."""
    return (
        f"lines {first}-{last} were read as one row: a cell holds a line break (is a quote left "
        f"open on line {first}?); nothing was published: fix the file and upload it again"
    )


def _reference(cell: str | None, limit: int) -> str | None:
    """A row's store or receipt id for the report: none when blank or too long to be one."""
    value = (cell or "").strip()
    return value if 0 < len(value) <= limit else None


def _till_document(
    store_id: str, receipt_id: str, rows: list[tuple[int, CsvRow]], policy: DropInvalid
) -> Receipt | Return:
    """One receipt's rows as what they record: a sale (or pickup), or a return."""
    first = rows[0][1]
    if any(row.receipt_fields() != first.receipt_fields() for _, row in rows[1:]):
        raise ValueError(f"rows of receipt {receipt_id} disagree on its receipt fields")
    if first.returns_order_id is not None:
        return _return(store_id, receipt_id, first.returns_order_id, [r for _, r in rows], policy)
    if first.reason is not None:
        raise ValueError(f"receipt {receipt_id} gives a reason but no returns_order_id")
    return Receipt(
        store_id=store_id,
        till_id=first.till_id,
        receipt_id=receipt_id,
        occurred_at=first.occurred_at,
        currency=first.currency,
        lines=[row.line() for _, row in rows],
        total=first.receipt_total,
        tax=first.tax,
        discount=first.discount,
        payment_method=first.payment_method,
        customer=first.customer(policy),
        customer_entry=first.customer_entry,
        pickup_order_id=first.pickup_order_id,
        cart_id=first.cart_id,
        quote_id=first.quote_id,
        coupons=first.coupon_codes(),
    )


SALE_ONLY = ("pickup_order_id", "tax", "discount", "payment_method", "cart_id", "quote_id")
"""Columns a return's rows leave blank, with `coupons`: filled, they say the row was keyed as a
sale."""


def _sale_only(row: CsvRow) -> list[str]:
    """The sale-only columns a row fills (a `coupons` cell of separators alone fills none)."""
    filled = [name for name in SALE_ONLY if getattr(row, name) is not None]
    return filled + (["coupons"] if row.coupon_codes() else [])


def _return(
    store_id: str, return_id: str, order_id: str, rows: list[CsvRow], policy: DropInvalid
) -> Return:
    """A return's rows (`returns_order_id` set): the goods that came back and what was paid."""
    first = rows[0]
    sale_only = _sale_only(first)
    if sale_only:
        names = ", ".join(sale_only)
        raise ValueError(f"return {return_id} fills what only a sale takes: {names}")
    return Return(
        store_id=store_id,
        till_id=first.till_id,
        return_id=return_id,
        occurred_at=first.occurred_at,
        currency=first.currency,
        order_id=order_id,
        lines=[row.line() for row in rows],
        refund_total=first.receipt_total,
        reason=first.reason,
        customer=first.customer(policy),
        customer_entry=first.customer_entry,
    )
