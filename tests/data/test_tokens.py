"""Token sets (``newllm.data.tokens``): the next-token targets never cross a stream's end."""
from __future__ import annotations

from helpers.toy import from_lists
from newllm.data.tokens import next_token_targets


def test_targets_stay_within_streams():
    ts = from_lists([[5, 6, 7], [8], [9, 10]])
    assert next_token_targets(ts.tokens, ts.offsets, "sample").tolist() == [6, 7, -1, -1, 10, -1]
    assert next_token_targets(ts.tokens, ts.offsets, "corpus").tolist() == [6, 7, 8, 9, 10, -1]
