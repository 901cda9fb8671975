import json

import numpy as np
import pytest

from bundle.data import DatasetError, check_label_values, load_dataset_description, paper_split
from bundle.data.crops import read_with_halo
from bundle.io import open_volume, write_volume


def test_paper_split_on_the_paper_depth_and_scaled():
    assert paper_split(1900) == {"train": [0, 1300], "val": [1386, 1514], "test": [1600, 1900]}
    assert paper_split(190) == {"train": [0, 130], "val": [138, 150], "test": [158, 188]}


def make_dataset(tmp_path, image_shape=(20, 8, 8), label_shape=None, splits=None, label_values=(0, 1, 2)):
    write_volume(tmp_path / "img.raw", np.zeros(image_shape, np.uint8))
    label = np.resize(np.array(label_values, np.uint8), label_shape or image_shape)
    write_volume(tmp_path / "lab.raw", label)
    document = {"volumes": [{"image": "img.raw", "label": "lab.raw", "splits": splits or {"train": [0, 10], "val": [12, 15]}, "voxel_size_um": 1.3}]}
    (tmp_path / "dataset.json").write_text(json.dumps(document))
    return tmp_path


def test_description_parses_ranges_lists_and_extras(tmp_path):
    make_dataset(tmp_path, splits={"train": [[0, 2], [5, 7]], "test": [15, 20]})
    (entry,) = load_dataset_description(tmp_path)
    assert entry.ranges("train") == [(0, 2), (5, 7)] and entry.ranges("val") == []
    assert entry.extra == {"voxel_size_um": 1.3}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(label_shape=(20, 8, 9)), "has shape"),
        (dict(splits={"train": [0, 25]}), "outside the volume's depth 20"),
        (dict(splits={"train": [0, 10], "val": [8, 12]}), "overlaps"),
        (dict(splits={"train": [5, 5]}), "empty or reversed"),
        (dict(splits={"training": [0, 5]}), "'splits' must map"),
    ],
)
def test_bad_descriptions_are_refused_naming_the_file(tmp_path, kwargs, match):
    make_dataset(tmp_path, **kwargs)
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset_description(tmp_path)
    assert "dataset.json" in str(err.value)


def test_missing_file_named_in_description(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "lab.raw").unlink()
    with pytest.raises(DatasetError, match="lab.raw not found"):
        load_dataset_description(tmp_path)


def test_label_values_outside_classes_are_refused(tmp_path):
    make_dataset(tmp_path, label_values=(0, 1, 3))
    (entry,) = load_dataset_description(tmp_path)
    with pytest.raises(DatasetError, match=r"label values \[3\]"):
        check_label_values(entry.label(), 3, [(0, 10)])
    make_dataset(tmp_path, label_values=(0, 255, 2))
    (entry,) = load_dataset_description(tmp_path)
    assert check_label_values(entry.label(), 3, [(0, 10)]).tolist()[1] == 0


def test_read_with_halo_uses_real_neighbours_and_mirrors_at_the_ends(tmp_path):
    data = np.arange(6, dtype=np.uint8)[:, None, None] * np.ones((6, 2, 2), np.uint8)
    write_volume(tmp_path / "z.raw", data)
    volume = open_volume(tmp_path / "z.raw")
    assert read_with_halo(volume, 2, 4, 2)[:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert read_with_halo(volume, 0, 2, 2)[:, 0, 0].tolist() == [2, 1, 0, 1, 2, 3]
    assert read_with_halo(volume, 5, 6, 2)[:, 0, 0].tolist() == [3, 4, 5, 4, 3]


def test_crop_dataset_reads_crops_and_warns_about_absent_classes(tmp_path, caplog):
    from bundle.data import RandomCropDataset

    dataset = RandomCropDataset(tmp_path, crop_size=(8, 8), z_context=2, num_samples=4)
    make_dataset(tmp_path, image_shape=(20, 16, 16), label_values=(0, 1))
    with caplog.at_level("WARNING"):
        dataset.plan()
    assert "classes [2] are absent" in caplog.text
    dataset.set_random_state(0)
    item = dataset[0]
    assert item["image"].shape == (5, 8, 8) and item["label"].shape == (1, 8, 8)
    assert dataset.class_counts.tolist()[2] == 0


def test_datasets_read_nothing_until_first_use_then_name_the_missing_description_each_time(tmp_path):
    from bundle.data import RandomCropDataset, SlabDataset

    crops, slabs = RandomCropDataset(tmp_path, crop_size=(8, 8), num_samples=4), SlabDataset(tmp_path, split="val")
    assert len(crops) == 4
    with pytest.raises(TypeError, match="once the files are read"):
        len(slabs)
    for dataset in (crops, slabs, crops):
        with pytest.raises(DatasetError, match="dataset description not found"):
            dataset[0]
    make_dataset(tmp_path, image_shape=(20, 16, 16))
    assert len(slabs.plan()) > 0 and slabs.plan() is slabs and crops[0]["image"].shape == (1, 8, 8)


def test_crops_from_y_and_x_planes_keep_image_and_label_aligned(tmp_path):
    from bundle.data import RandomCropDataset

    image = (np.arange(20 * 16 * 16) % 251).astype(np.uint8).reshape(20, 16, 16)
    write_volume(tmp_path / "img.raw", image)
    write_volume(tmp_path / "lab.raw", (image % 3).astype(np.uint8))
    (tmp_path / "dataset.json").write_text(json.dumps({"volumes": [{"image": "img.raw", "label": "lab.raw", "splits": {"train": [0, 20]}}]}))
    dataset = RandomCropDataset(tmp_path, crop_size=(8, 8), z_context=1, num_samples=30, planes=("z", "y", "x"))
    dataset.set_random_state(0)
    seen = set()
    for i in range(30):
        item = dataset[i]
        assert item["image"].shape == (3, 8, 8) and item["label"].shape == (1, 8, 8)
        np.testing.assert_array_equal(item["image"][1].numpy().astype(np.uint8) % 3, item["label"][0].numpy())
        seen.add(dataset.randomize()[1])
    assert seen == {"z", "y", "x"}


def test_rare_class_oversampling_centres_crops_on_pores(tmp_path):
    from bundle.data import RandomCropDataset

    write_volume(tmp_path / "img.raw", np.zeros((10, 64, 64), np.uint8))
    label = np.zeros((10, 64, 64), np.uint8)
    label[5, 40:42, 50:52] = 2
    write_volume(tmp_path / "lab.raw", label)
    (tmp_path / "dataset.json").write_text(json.dumps({"volumes": [{"image": "img.raw", "label": "lab.raw", "splits": {"train": [0, 10]}}]}))
    plain = RandomCropDataset(tmp_path, crop_size=(16, 16), num_samples=50)
    over = RandomCropDataset(tmp_path, crop_size=(16, 16), num_samples=50, rare_fraction=0.5)
    plain.set_random_state(1)
    over.set_random_state(1)
    with_pore = [sum(int((d[i]["label"] == 2).any()) for i in range(50)) for d in (plain, over)]
    assert with_pore[0] <= 3 and with_pore[1] >= 15
