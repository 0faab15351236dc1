"""registry.blob_uploads: the hash of a resumed upload is the hash of the blob, however it broke."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.registry.blob_uploads import CHECKPOINT_BYTES, UploadModes, _Hash

SIZE = 3 * CHECKPOINT_BYTES + 12345
DATA = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class TestHash:
    """_Hash: checkpoints let a resume go back and hash on to the same digest."""

    @settings(max_examples=30, deadline=None)
    @given(
        st.lists(st.integers(1, 2 * CHECKPOINT_BYTES), min_size=1, max_size=8),
        st.lists(st.integers(0, SIZE), max_size=3),
    )
    def test_breaks_anywhere_hash_to_the_blob(self, pieces: list[int], breaks: list[int]) -> None:
        """Fed in any pieces, rewound to any offsets it had passed and fed on from the
        checkpoint it went back to, the hash is the blob's digest."""
        hashed = _Hash(DIGEST)
        for point in breaks:
            position = 0
            for piece in pieces:
                if position >= point:
                    break
                hashed.update(DATA[position : position + piece])
                position += piece
            start = hashed.rewind(min(point, hashed.offset))
            assert start <= point
            assert start % CHECKPOINT_BYTES == 0
        hashed.update(DATA[hashed.offset :])
        hashed.check()

    def test_forgetting_keeps_the_checkpoint_a_resume_needs(self) -> None:
        """After forget_below(N), a rewind to N or later still finds a checkpoint."""
        hashed = _Hash(DIGEST)
        hashed.update(DATA)
        offset = 2 * CHECKPOINT_BYTES + 5
        hashed.forget_below(offset)
        assert hashed.rewind(offset) == 2 * CHECKPOINT_BYTES
        hashed.update(DATA[hashed.offset :])
        hashed.check()


class TestUploadModes:
    """UploadModes: a registry is resumable until it shows it is not."""

    def test_learned_per_registry(self) -> None:
        """One registry learned whole-blob leaves the others resumable."""
        modes = UploadModes()
        assert modes.resumable("a:5000")
        modes.whole_blobs("a:5000", "status GET answered 404")
        assert not modes.resumable("a:5000")
        assert modes.resumable("b:5000")
