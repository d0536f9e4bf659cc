"""The one safe `.pt` loader and the one atomic writer: no published file is ever half-written, and no `.pt`
file is ever allowed to run code."""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import struct
import tempfile
import zipfile
from pathlib import Path

from .errors import InputError


class _NeedsTorchsCheck(Exception):
    """The file names a global the fast path does not resolve: torch's weights-only loader decides."""


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Python's C unpickler, resolving no global but the one that rebuilds a tensor (and the OrderedDict of its
    hooks). Without a resolved global no pickle can call anything, so it is stricter than torch's weights-only
    unpickler; it is also several times faster on VirNucPro's DNABERT-S files (millions of Python floats:
    2.7 s against 19.5 s for a 10,000-read chunk on one core), because that one is written in Python.
    """

    ALLOWED = frozenset({("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict")})

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _NeedsTorchsCheck(f"{module}.{name}")


def _tensors_only_load(file, **kwargs):
    return _TensorsOnlyUnpickler(file, **kwargs).load()


# What torch.load calls its pickle module for: the restricted unpickler, and a load that uses it.
_TENSORS_ONLY_PICKLE = type("tensors_only_pickle", (), {"Unpickler": _TensorsOnlyUnpickler,
                                                        "load": staticmethod(_tensors_only_load),
                                                        "__name__": "tensors_only_pickle"})


def load_pt(path):
    """Load a `.pt` file that holds only tensors and plain containers (lists, dicts, strings, numbers).

    Fast path: the tensors-only unpickler above. Anything it does not load (another global, a damaged file)
    goes to `torch.load(..., weights_only=True)`, which decides: so the files accepted and rejected, and the
    messages, are weights_only's. A file whose unpickling would need arbitrary classes (and so could run
    code) is rejected before any of it runs; truncated or corrupt files get the contract's error line.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(path, "-", "file not found", "check the path or rerun the step that writes it")
    with contextlib.suppress(Exception):
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TENSORS_ONLY_PICKLE)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long, multi-line and colour-coded; keep its one informative phrase.
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed global.*)?$", str(exc), re.M)
        reason = (detail.group(1).strip() if detail else "") or "unsupported content"
        if reason.startswith("Unsupported operand"):  # garbage bytes: unknown opcodes, not a payload
            raise damaged_pt_error(path) from None
        raise InputError(path, "-", f"unsafe or unsupported pickle content, not loaded ({reason})",
                         "re-save it with torch.save using only lists, dicts, strings and tensors") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError,
            KeyError, IndexError, struct.error):  # the last three: garbage through the weights-only unpickler
        raise damaged_pt_error(path) from None


def damaged_pt_error(path: Path) -> InputError:
    """The error line for a `.pt` file torch cannot read, saying what the file looks like instead.

    torch's own exceptions (EOFError, BadZipFile, 'Unsupported operand 37') say nothing to a user; the
    first bytes tell an empty file, a cut-off archive, a compressed or a text file apart.
    """
    with open(path, "rb") as handle:
        head = handle.read(256)
    size = path.stat().st_size
    regenerate = "regenerate this file (the step that wrote it was interrupted or the copy is damaged)"
    if size == 0:
        return InputError(path, "-", "truncated or corrupt .pt file (empty: 0 bytes)", regenerate)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return InputError(path, "-", f"truncated or corrupt .pt file (a torch.save file cut off or damaged, "
                                     f"{size:,} bytes)", regenerate)
    if head.startswith(b"\x1f\x8b"):
        return InputError(path, "-", "truncated or corrupt .pt file (gzip-compressed, not a torch.save file)",
                          "decompress it with gunzip, or regenerate it")
    text = head.decode("ascii", errors="replace")
    if all(c.isprintable() or c.isspace() for c in text) and "\ufffd" not in text:
        first = (text.strip().splitlines() or [""])[0][:40]
        return InputError(path, "-", f"truncated or corrupt .pt file (text, not a torch.save file: starts {first!r})",
                          "give the .pt file that torch.save wrote, or regenerate it")
    return InputError(path, "-", f"truncated or corrupt .pt file (unknown binary content, {size:,} bytes)",
                      regenerate)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Readers (and Nextflow's publisher) see the complete file or none, even if the process is
    killed mid-write: the temporary name is hidden and removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp creates 0600 whatever the umask; the file gets the mode any new file would get, so that
        # lab-mates on a shared cluster can read what the pipeline publishes (hard links share the mode)
        os.chmod(tmp, 0o666 & ~current_umask())
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask: from /proc on Linux (reading it changes nothing, so writer threads are safe), else
    by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_pt(obj, path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
