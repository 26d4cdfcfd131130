"""FitsSums: FITS DATASUM/CHECKSUM verification of a file fed in pieces (the downloader's verifier)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from jsocmirror.fitsheader import FitsSums

PIECE_SIZES = [1, 7, 80, 2879, 2880, 2881, 65536, 364 * 2880, 1 << 20]


def data_start(body: bytes, index: int) -> int:
    with fits.open(io.BytesIO(body)) as hdul:
        return hdul.fileinfo(index)["datLoc"]


def fits_bytes(checksum: bool = True) -> bytes:
    """Three HDUs with data: a primary image, a tile-compressed image, a binary table."""
    rng = np.random.default_rng(5)
    hdul = fits.HDUList([
        fits.PrimaryHDU(rng.integers(-100, 100, size=(50, 30), dtype=np.int16)),
        fits.CompImageHDU(rng.integers(-500, 500, size=(200, 120), dtype=np.int32), compression_type="RICE_1"),
        fits.BinTableHDU.from_columns([fits.Column("x", "E", array=rng.random(300).astype(np.float32))]),
    ])
    out = io.BytesIO()
    hdul.writeto(out, checksum=checksum)
    return out.getvalue()


def state(body: bytes, piece: int | None = None) -> str:
    sums = FitsSums()
    piece = piece or len(body) or 1
    for start in range(0, len(body), piece):
        sums.feed(memoryview(body)[start:start + piece])
    return sums.finish()


@pytest.mark.parametrize("piece", PIECE_SIZES)
def test_pieces_of_any_size_verify_like_the_whole(piece):
    body = fits_bytes()
    assert state(body, piece) == state(body) == "ok"
    assert state(fits_bytes(checksum=False), piece) == "absent"


@pytest.mark.parametrize("piece", [7, 2880, 65536])
def test_damage_is_named_whatever_the_piece_size(piece):
    body = fits_bytes()
    data_byte = bytearray(body)
    data_byte[data_start(body, 2) + 5] ^= 0x40
    with pytest.raises(ValueError, match="HDU 2: DATASUM does not match"):
        state(bytes(data_byte), piece)
    header_byte = bytearray(body)
    header_byte[data_start(body, 1) - 2880 + 40] ^= 0x01  # a comment in the second HDU's header
    with pytest.raises(ValueError, match="HDU 1: CHECKSUM does not verify"):
        state(bytes(header_byte), piece)
    with pytest.raises(ValueError, match="HDU 2: data unit truncated"):
        state(body[:-2880], piece)
    with pytest.raises(ValueError, match="not a whole number of FITS blocks"):
        state(body[:-100], piece)


def test_truncated_header_empty_file_and_not_fits():
    body = fits_bytes()
    with pytest.raises(ValueError, match="HDU 0: header has no END card"):
        state(b"SIMPLE  =                    T".ljust(2880))  # a header block cut before its END card
    assert state(body[:data_start(body, 1) - 2880]) == "ok"  # cut between HDUs: only Content-Length tells
    with pytest.raises(ValueError, match="not a whole number"):
        state(b"")
    with pytest.raises(ValueError, match="no SIMPLE card"):
        state(b"<html>" + b" " * 2874)


def test_a_negative_axis_is_refused_not_looped_over():
    header = b"".join(card.ljust(80).encode() for card in
                      ("SIMPLE  =                    T", "BITPIX  =                   16", "NAXIS   =                    1",
                       "NAXIS1  =                -5000", "DATASUM = '0'", "END"))
    with pytest.raises(ValueError, match="HDU 0 has unreadable NAXIS/BITPIX cards"):
        state(header.ljust(2880) + b"\0" * 2880 * 3)


def test_trailing_zero_blocks_after_the_last_hdu_are_padding():
    assert state(fits_bytes() + b"\0" * 2880 * 2, 1000) == "ok"


def test_a_real_jsoc_export_verifies(fixtures_dir):
    body = (fixtures_dir / "headers" / "aia_171_cutout.fits").read_bytes()
    with fits.open(io.BytesIO(body), disable_image_compression=True) as hdul:
        assert hdul[1].verify_datasum() == hdul[1].verify_checksum() == 1  # astropy agrees
    for piece in (4096, len(body)):
        assert state(body, piece) == "ok"
