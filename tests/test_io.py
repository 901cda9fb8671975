import numpy as np
import pytest
import tifffile
from monai.transforms import LoadImage

from bundle.io import SidecarError, VolumeError, XCTVolumeReader, open_volume, parse_sidecar, write_volume
from bundle.io.volumes import RawVolume


def ramp(shape=(6, 7, 9), dtype=np.uint16):
    return (np.arange(np.prod(shape)) * 37 % 50_000).astype(dtype).reshape(shape)


@pytest.mark.parametrize("suffix", [".raw", ".tif", ".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_values_dtype_shape_axis_order(tmp_path, suffix, dtype):
    data = ramp(dtype=dtype)
    path = write_volume(tmp_path / f"v{suffix}", data)
    volume = open_volume(path)
    assert volume.shape == data.shape and volume.dtype == data.dtype
    np.testing.assert_array_equal(volume.read(), data)
    np.testing.assert_array_equal(volume.read(2, 5, slice(1, 4), slice(3, 8)), data[2:5, 1:4, 3:8])
    loaded = LoadImage(reader=XCTVolumeReader(), image_only=True)(str(path))
    np.testing.assert_array_equal(np.asarray(loaded), data)
    assert not list(tmp_path.glob(".*partial*"))


def test_nifti_is_stored_x_fastest_as_nifti_expects(tmp_path):
    import nibabel

    data = ramp()
    write_volume(tmp_path / "v.nii", data)
    stored = np.asarray(nibabel.load(str(tmp_path / "v.nii")).dataobj)
    assert stored.shape == (9, 7, 6)
    np.testing.assert_array_equal(stored.transpose(2, 1, 0), data)


def test_tiff_folder_in_natural_order(tmp_path):
    data = ramp((12, 5, 4), np.uint8)
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(12):
        tifffile.imwrite(folder / f"slice_{z}.tif", data[z])
    volume = open_volume(folder)
    assert volume.shape == (12, 5, 4)
    np.testing.assert_array_equal(volume.read(8, 12), data[8:12])


def test_raw_crop_reads_the_right_bytes(tmp_path):
    data = ramp((10, 20, 30), np.uint16)
    (tmp_path / "c.raw").write_bytes(data.astype("<u2").tobytes())
    (tmp_path / "c.raw.info").write_text("NUM_X = 30\nNUM_Y = 20\nNUM_Z = 10\nDATATYPE = uint16\n")
    crop = RawVolume(tmp_path / "c.raw").read(4, 6, slice(5, 8), slice(10, 13))
    raw = np.fromfile(tmp_path / "c.raw", dtype="<u2")
    for z in range(2):
        for y in range(3):
            offset = (4 + z) * 600 + (5 + y) * 30 + 10
            np.testing.assert_array_equal(crop[z, y], raw[offset : offset + 3])


def test_pyhst_sidecar_with_mangled_first_line_and_inferred_dtype(tmp_path):
    (tmp_path / "pa66.raw").write_bytes(bytes(range(24)))
    (tmp_path / "pa66.raw.info").write_text("\u00a1 PyHST_SLAVE VOLUME INFO FILE\nNUM_X = 4\nNUM_Y = 3\nNUM_Z = 2\nVOXEL_SIZE = 1.3\n")
    volume = open_volume(tmp_path / "pa66.raw")
    assert volume.dtype == np.uint8 and volume.shape == (2, 3, 4)
    assert volume.meta["VOXEL_SIZE"] == 1.3


def test_yaml_sidecar_big_endian(tmp_path):
    data = ramp((2, 3, 4), np.uint16)
    (tmp_path / "b.raw").write_bytes(data.astype(">u2").tobytes())
    (tmp_path / "b.raw.info").write_text("shape: [4, 3, 2]\ndtype: UINT16\nbyte_encoding: bigendian\n")
    np.testing.assert_array_equal(open_volume(tmp_path / "b.raw").read(), data)


def test_written_sidecar_is_pyhst_style_with_explicit_type(tmp_path):
    write_volume(tmp_path / "w.raw", ramp((2, 3, 4), np.float32), {"VOXEL_SIZE": 1.3})
    text = (tmp_path / "w.raw.info").read_text()
    assert "NUM_X = 4" in text and "DATATYPE = float32" in text and "BYTEORDER = LOWBYTEFIRST" in text
    info = parse_sidecar(tmp_path / "w.raw.info")
    assert info.shape == (2, 3, 4) and info.extra == {"VOXEL_SIZE": 1.3}


@pytest.mark.parametrize(
    "sidecar, size, match",
    [
        ("NUM_X = 4\nNUM_Y = 3\nNUM_Z = 2\nDATATYPE = uint8\n", 23, "file has 23 B"),
        ("NUM_X = 4\nNUM_Y = 3\n", 24, "lacks the sizes"),
        ("NUM_X = 4\nNUM_Y = 3\nNUM_Z = 2\nDATATYPE = complex64\n", 24 * 8, "not a numeric type"),
        ("NUM_X = 4\nNUM_Y = 3\nNUM_Z = 2\nDATATYPE = uint7\n", 24, "unknown DATATYPE"),
        ("NUM_X = 4\nNUM_Y = 3\nNUM_Z = 2\n", 24 * 3, "not 1, 2 or 4 bytes per voxel"),
        ("NUM_X = 4\nthis line is garbage\n", 24, "line 2"),
        (None, 24, "sidecar not found"),
    ],
)
def test_bad_raw_inputs_name_the_file(tmp_path, sidecar, size, match):
    (tmp_path / "bad.raw").write_bytes(bytes(size))
    if sidecar is not None:
        (tmp_path / "bad.raw.info").write_text(sidecar)
    with pytest.raises((SidecarError, VolumeError), match=match) as err:
        open_volume(tmp_path / "bad.raw")
    assert "bad.raw" in str(err.value)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="not found"):
        open_volume(tmp_path / "missing.raw")
    (tmp_path / "x.png").write_bytes(b"123")
    with pytest.raises(VolumeError, match="unknown volume format"):
        open_volume(tmp_path / "x.png")


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    with pytest.raises(VolumeError):
        write_volume(tmp_path / "v.raw", np.zeros((2, 2)))
    with pytest.raises(VolumeError, match="unknown output format"):
        write_volume(tmp_path / "v.png", np.zeros((2, 2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".raw", ".tif", ".nii.gz"])
def test_monai_save_image_with_the_bundle_writer_round_trips(tmp_path, suffix):
    from monai.transforms import SaveImage

    from bundle.io import XCTVolumeWriter

    data = ramp((5, 6, 7), np.uint8)
    loaded = LoadImage(reader=XCTVolumeReader(), image_only=True)(str(write_volume(tmp_path / f"in{suffix}", data)))
    SaveImage(output_dir=str(tmp_path / "out"), output_ext=suffix, output_postfix="copy", writer=XCTVolumeWriter, output_dtype=np.uint8,
              separate_folder=False, channel_dim=None)(loaded)
    written = list((tmp_path / "out").glob(f"*copy{suffix}"))
    assert len(written) == 1
    np.testing.assert_array_equal(open_volume(written[0]).read(), data)


def test_multi_page_tiff_is_opened_once_and_reads_the_right_pages(tmp_path, monkeypatch):
    import pickle

    import tifffile

    from bundle.io import open_volume

    stack = np.arange(40 * 8 * 6, dtype=np.uint16).reshape(40, 8, 6)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    volume = open_volume(tmp_path / "stack.tif")
    opened = []
    real = tifffile.TiffFile
    monkeypatch.setattr(tifffile, "TiffFile", lambda *a, **k: opened.append(a) or real(*a, **k))
    for z in range(0, 40, 5):
        np.testing.assert_array_equal(volume.read(z, z + 5, slice(1, 7), slice(2, 5)), stack[z : z + 5, 1:7, 2:5])
    assert len(opened) == 1
    copy = pickle.loads(pickle.dumps(volume))
    np.testing.assert_array_equal(copy.read(38, 40), stack[38:40])
