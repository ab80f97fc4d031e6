"""Hostile face images: every mode converted correctly or refused, bombs cost nothing."""
import numpy as np
import pytest
from hostile import check_refusal, refused
from PIL import Image

from labkit.cli import read_face
from labkit.errors import LabError


def face(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (55, 47, 3), dtype=np.uint8)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    gray = np.random.default_rng(0).integers(0, 65536, (55, 47)).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I")  # PIL keeps the 16 bits
    pixels = read_face(tmp_path / "g16.png")
    np.testing.assert_allclose(pixels[..., 0], gray / 257, rtol=1e-6)
    assert (pixels[..., 0] == pixels[..., 2]).all() and pixels.max() <= 255


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1"])
def test_other_modes_match_their_rgb_conversion(tmp_path, mode):
    image = Image.fromarray(face()).convert(mode)
    path = tmp_path / f"face_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    with Image.open(path) as saved:
        expected = np.asarray(saved.convert("RGB"), np.float32)
    np.testing.assert_array_equal(read_face(path), expected)


def test_32_bit_float_image_is_refused(tmp_path):
    Image.fromarray(np.full((55, 47), 0.5, np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(LabError, match="a F image .* has no fixed pixel range"):
        read_face(tmp_path / "f.tiff")


def bomb_png(path, width, height):
    """A PNG declaring width x height 8-bit gray pixels, all zero: a few KB on disk."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    c = zlib.compressobj(9)
    row = bytes(width + 1)
    body = b"".join(c.compress(row) for _ in range(min(height, 64))) + c.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size", [(40000, 40000), (5000, 5000)])
def test_decompression_bomb_is_refused_from_the_header(tmp_path, size):
    path = bomb_png(tmp_path / "bomb.png", *size)
    assert path.stat().st_size < 100_000
    with pytest.raises(LabError, match="bomb.png: the image (is 5000x5000 pixels|declares far more pixels)"):
        read_face(path)


def test_image_bomb_in_bounded_memory_on_the_command_line(tmp_path):
    import subprocess
    import sys
    bomb_png(tmp_path / "bomb.png", 30000, 30000)
    script = ("import resource, sys; from labkit.cli import read_face, fail; from labkit import LabError\n"
              "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
              "try: read_face(sys.argv[1])\nexcept LabError as err: sys.exit(fail(str(err)))")
    proc = subprocess.run([sys.executable, "-c", script, tmp_path / "bomb.png"], capture_output=True,
                          text=True)
    check_refusal(proc.returncode, proc.stderr, "bomb.png: the image declares far more pixels")


def test_goodnet_refuses_a_bad_image_in_one_line(tiny_lab, tmp_path, capsys):
    Image.fromarray(face()[:40]).save(tmp_path / "small.png")
    refused(capsys, ["goodnet", tiny_lab.badnet_path, tiny_lab.badnet_path, tmp_path / "small.png"],
            "small.png: the image is 47x40 pixels", tmp_path, tiny_lab.root)
