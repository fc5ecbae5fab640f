"""An unreadable checkpoint is said in our words: which file, what was expected, what was found (truncated:
N bytes, not a zip or pickle archive ...), and what happens or what to do; never torch's text cut short."""
from __future__ import annotations

import zipfile

import torch

from kdcore import checkpoints

EXPECTED = "expected a PyTorch checkpoint saved by kdbench, found"
CUT = f"{EXPECTED} a zip archive cut short (300 bytes, no end-of-archive record): truncated"
EMPTY = f"{EXPECTED} an empty file (0 bytes)"
OVER = "ignoring it: training starts over (no other readable checkpoint)"


def test_what_is_there_says_what_a_file_holds(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.arange(1000.0)}, whole)
    size = whole.stat().st_size
    (tmp_path / "cut.pt").write_bytes(whole.read_bytes()[:size - 1])  # one byte short: no end-of-archive record
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(10.0)}, legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "cut_legacy.pt").write_bytes(legacy.read_bytes()[:100])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "zeros.pt").write_bytes(bytes(4096))  # a page a crash left zeroed
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    other = (tmp_path / "other.zip").stat().st_size
    said = {name: checkpoints.what_is_there(tmp_path / name)
            for name in ("cut.pt", "cut_legacy.pt", "empty.pt", "zeros.pt", "other.zip", "missing.pt")}
    assert said == {
        "cut.pt": f"a zip archive cut short ({size - 1} bytes, no end-of-archive record): truncated",
        "cut_legacy.pt": "a pickle stream (100 bytes) that torch cannot read: a legacy torch file cut short or corrupt",
        "empty.pt": "an empty file (0 bytes)",
        "zeros.pt": "4096 bytes that are neither a zip archive nor a pickle stream (starting "
                    "b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00')",
        "other.zip": f"a whole zip archive ({other} bytes) whose contents torch cannot read: corrupt, or not PyTorch's",
        "missing.pt": "a file this process cannot read (No such file or directory)",
    }


def test_a_truncated_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path):
    path = tmp_path / "run.ckpt.pt"
    checkpoints.atomic_torch_save({"epoch": 1}, path, keep_previous=True)
    checkpoints.atomic_torch_save({"epoch": 2}, path, keep_previous=True)
    prev = tmp_path / "run.ckpt.pt.prev"
    assert torch.load(prev)["epoch"] == 1
    path.write_bytes(path.read_bytes()[:300])
    logs: list[str] = []
    assert checkpoints.load(path, logs.append) == {"epoch": 1}
    assert logs == [f"checkpoint {path} is unreadable: {CUT}; ignoring it: trying run.ckpt.pt.prev instead"]
    prev.write_bytes(b"")
    logs.clear()
    assert checkpoints.load(path, logs.append) is None
    assert logs == [f"checkpoint {path} is unreadable: {CUT}; ignoring it: trying run.ckpt.pt.prev instead",
                    f"checkpoint {prev} is unreadable: {EMPTY}; {OVER}"]
    path.unlink()
    logs.clear()
    assert checkpoints.load(path, logs.append) is None
    assert logs == [f"checkpoint {prev} is unreadable: {EMPTY}; {OVER}"]
