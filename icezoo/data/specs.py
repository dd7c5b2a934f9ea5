"""The batch-spec language: which batch files (or fixed-size event chunks of a single-file source)
a command reads. :func:`parse_batches` and its formatter live together so that what a log writes
parses back.

``"1:600"`` / ``"(1, 600)"``: an inclusive range of the available ids; ``"1,4,7"``: exactly those;
``"1-3,5"`` / ``"1:3,5"``: ranges and ids mixed (what :func:`format_batches` writes); ``"cycle"``
(or ``"all"``): every available id.
"""

from __future__ import annotations

import re

from icezoo.core.errors import IcezooError


def parse_batches(spec: str, available: list[int]) -> list[int]:
    """Batch ids named by ``spec``, in order.

    ``"1:600"`` or ``"(1, 600)"`` (as the log writes it): the available ids in that inclusive range;
    ``"1,4,7"``: exactly those (each must exist); ``"1-3,5"`` or ``"1:3,5"``: ranges and ids mixed
    (what :func:`format_batches` writes); ``"cycle"``: every available file (the training loop
    walks them round-robin across epochs, see :func:`cycle_batches`).
    """
    avail = sorted(set(int(a) for a in available))
    text = str(spec).strip().lower().strip("()[] ")
    if text in ("cycle", "all"):
        if not avail:
            raise IcezooError(f"batches '{spec}': no batch files available")
        return avail
    m = re.fullmatch(r"(\d+)\s*[:,\-]\s*(\d+)", text) if (":" in text or "(" in str(spec)) else None
    if m:
        return _batch_range(spec, int(m.group(1)), int(m.group(2)), avail)
    ids: list[int] = []
    for part in text.split(","):
        if not part.strip():
            continue
        r = re.fullmatch(r"\s*(\d+)\s*(?:[:\-]\s*(\d+)\s*)?", part)
        if r is None:
            raise IcezooError(f"batches '{spec}': expected 'A:B', '(A, B)', 'A,B,C', 'A-B,C' or 'cycle'")
        if r.group(2) is None:
            ids.append(int(r.group(1)))
        else:
            ids.extend(_batch_range(spec, int(r.group(1)), int(r.group(2)), avail))
    if not ids:
        raise IcezooError(f"batches '{spec}': no batch ids")
    missing = [b for b in ids if b not in set(avail)]
    if missing:
        raise IcezooError(f"batches '{spec}': batch file(s) {_ids_text(missing)} not found (have {_ids_text(avail)})")
    return list(dict.fromkeys(ids))


def _batch_range(spec: str, lo: int, hi: int, avail: list[int]) -> list[int]:
    """The available ids in ``lo..hi`` (inclusive); an error when there are none."""
    if lo > hi:
        raise IcezooError(f"batches '{spec}': empty range ({lo} > {hi})")
    out = [b for b in avail if lo <= b <= hi]
    if not out:
        raise IcezooError(f"batches '{spec}': no available batch file in {lo}..{hi} (have {_ids_text(avail)})")
    return out


def format_batches(ids: list[int]) -> str:
    """Batch ids as text that :func:`parse_batches` reads back to the same ids (sorted, once each):
    runs of consecutive ids as ``A-B``, the others alone, ``[1, 2, 3, 5] -> "1-3,5"``; ``-`` for none."""
    ids = sorted(set(int(i) for i in ids))
    if not ids:
        return "-"
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def split_batches(available: list[int], train_spec: str = "cycle", val_spec: str | None = None) -> tuple[list[int], list[int]]:
    """(training ids, validation ids), never overlapping.

    Without ``val_spec`` the validation files are the last ~10% (at least 1) of the available files
    that training does not name explicitly (of all files for ``cycle``), and they are removed from
    training. An explicit ``val_spec`` that overlaps an explicit training list is an error.
    """
    avail = sorted(set(int(a) for a in available))
    train = parse_batches(train_spec, avail)
    explicit_train = str(train_spec).strip().lower() not in ("cycle", "all")
    if val_spec is None:
        k = max(1, len(avail) // 10)
        outside = [b for b in avail if b not in set(train)]
        candidates = outside if (explicit_train and outside) else avail
        val = candidates[-k:]
    else:
        val = parse_batches(val_spec, avail)
        overlap = sorted(set(val) & set(train))
        if overlap and explicit_train:
            raise IcezooError(f"validation batches {_ids_text(overlap)} are also training batches ('{train_spec}')")
    train = [b for b in train if b not in set(val)]
    if not train:
        hint = ("; training needs at least 2 batch files, one held out for validation (icezoo simulate "
                "writes 10 for small sets; --events-per-batch N sets the size)" if len(avail) == 1 else "")
        raise IcezooError(f"no training batch file left after holding out validation {_ids_text(val)} "
                          f"(available: {_ids_text(avail)}){hint}")
    return train, val


#: Kaggle's files hold 200,000 events; simulated sets default to at most this many per file ...
MAX_EVENTS_PER_FILE = 50_000
#: ... and to at least this many files, so that the default split (the last ~10% of the files held
#: out for validation, see :func:`split_batches`) leaves files to train on
MIN_FILES = 10


def default_events_per_batch(n_events: int) -> int:
    """Events per batch file when nobody says: at most 50,000, and small sets cut into 10 files
    (3,000 events -> 10 files of 300), so that every simulated set trains as it comes."""
    return max(1, min(MAX_EVENTS_PER_FILE, -(-int(n_events) // MIN_FILES)))


def cycle_batches(train: list[int], epoch: int, per_epoch: int) -> list[int]:
    """The ``per_epoch`` training files of ``epoch`` when walking ``train`` round-robin (``cycle``)."""
    if not train:
        raise IcezooError("cycle: no training batch files")
    per_epoch = max(1, min(per_epoch, len(train)))
    start = (epoch * per_epoch) % len(train)
    return [train[(start + i) % len(train)] for i in range(per_epoch)]


def _ids_text(ids: list[int], limit: int = 8) -> str:
    ids = list(ids)
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")
