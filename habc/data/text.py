"""Instruction tokens: UTF-8 bytes, shared by the data reader and the network.

Vocabulary: 257 ids. Id 0 is padding; byte b has id b + 1. No learned vocabulary, no files.
"""

from __future__ import annotations

import numpy as np

VOCAB_SIZE = 257
PAD_ID = 0


def tokenize(text: str | bytes, max_len: int) -> np.ndarray:
  """Encodes an instruction as byte ids, truncated or padded to ``max_len``.

  Args:
    text: the instruction (str, or UTF-8 bytes as tfds returns text).
    max_len: L, the token count.

  Returns:
    int32 [L]: byte + 1, then PAD_ID.
  """
  if max_len < 1:
    raise ValueError(f'tokenize: max_len must be >= 1, got {max_len}.')
  data = text if isinstance(text, bytes) else str(text).encode('utf-8')
  ids = np.frombuffer(data[:max_len], np.uint8).astype(np.int32) + 1
  out = np.full((max_len,), PAD_ID, np.int32)
  out[:ids.size] = ids
  return out


def detokenize(tokens) -> str:
  """Inverse of ``tokenize`` (padding dropped; a cut multi-byte character is replaced)."""
  ids = np.asarray(tokens).astype(np.int64)
  ids = ids[ids != PAD_ID] - 1
  return bytes(ids.astype(np.uint8).tolist()).decode('utf-8', errors='replace')
