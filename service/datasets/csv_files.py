"""CSV uploads through pyarrow's reader: a header row names the columns, the target column
holds labels (numbers, or strings that become class names), every other column numbers.
Errors name the column and the row."""

from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from service.datasets.checks import invalid

LINE_OFFSET = 1  # the header is line 1: data row n is on line n + 1


def read_csv(fh: IO[bytes], target: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Features (float64), labels, and the class names when the labels are strings."""
    table = _table(fh, target)
    names = table.column_names
    if names.count(target) != 1:
        msg = "Expected the target column once in the header."
        if len(target) < 100:
            msg = f"Expected the target column once in the header. Received: target={target!r}"
        raise invalid(msg, ("target",))
    columns = [(name, table.column(i)) for i, name in enumerate(names) if name != target]
    if not columns:
        raise invalid("Expected at least one feature column beside the target.")
    X = np.column_stack([_numbers(name, column) for name, column in columns])
    y, class_names = _labels(table.column(names.index(target)))
    return X, y, class_names


def _table(fh: IO[bytes], target: str) -> pa.Table:
    bad_rows: list[Any] = []

    def on_invalid_row(row: Any) -> str:
        bad_rows.append(row)
        return "error"

    try:
        table = pcsv.read_csv(
            fh,
            read_options=pcsv.ReadOptions(use_threads=False),  # else bad rows have no number
            parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid_row),
            convert_options=pcsv.ConvertOptions(column_types={target: pa.string()}),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise invalid(_parse_error(exc, bad_rows)) from None
    names = [str(n).strip() for n in table.column_names]
    if not names or table.num_rows == 0:
        raise invalid("Expected a header row and at least one data row.")
    return table.rename_columns(names)


def _parse_error(exc: Exception, bad_rows: list[Any]) -> str:
    if bad_rows:
        row = bad_rows[0]
        where = f" on line {row.number}" if row.number is not None else ""
        return f"Expected {row.expected_columns} fields{where}. Received: {row.actual_columns}"
    text = str(exc)
    if "Empty CSV" in text:
        return "Expected a header row and at least one data row."
    return f"Expected a well-formed UTF-8 CSV file: {text[:100]}"


def _numbers(name: str, column: pa.ChunkedArray) -> np.ndarray:
    """A feature column as float64, or a 422 naming the column and its first bad row."""
    label = name[:50]
    if column.null_count:
        row = _first(pc.is_null(column))
        raise invalid(f"Expected a number in column {label!r}, row {row}: the field is empty.")
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return column.to_numpy().astype(np.float64)
    if pa.types.is_boolean(column.type):
        return column.to_numpy().astype(np.float64)
    values = column.cast(pa.string()).to_pylist()
    for row, value in enumerate(values, start=1):
        try:
            float(value)
        except ValueError:
            raise invalid(
                f"Expected a number in column {label!r}, row {row} "
                f"(line {row + LINE_OFFSET}). Received: {str(value)[:40]!r}"
            ) from None
    return np.asarray(values, dtype=np.float64)


def _first(mask: pa.ChunkedArray) -> int:
    """The 1-based row of the first true value."""
    return int(np.argmax(mask.to_numpy(zero_copy_only=False))) + 1


def _labels(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str] | None]:
    if column.null_count:
        row = _first(pc.is_null(column))
        raise invalid(f"Expected a label in the target column, row {row}: the field is empty.")
    strings = pc.utf8_trim_whitespace(column)
    try:
        return strings.cast(pa.float64()).to_numpy(), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    class_names = sorted(set(strings.to_pylist()))
    index = pa.array(class_names)
    return pc.index_in(strings, value_set=index).to_numpy().astype(np.int64), class_names
