"""Bad arguments at the public boundary: flags are booleans, generators are generators, paths are paths;
each error names the argument (or the file) and what was expected."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffjpeg import EOT, JPEG, DefendedModel, DiffJPEG
from diffjpeg.attacks.core import fgsm, pgd
from diffjpeg.jpeg.codec import diff_jpeg
from diffjpeg.jpeg.io import decode_file, read_coefficients, write_coefficients


@pytest.fixture
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))


@pytest.mark.parametrize("value", ["no", "false", 1, 0, None])
def test_eot_fixed_takes_booleans_only(value):
    with pytest.raises(TypeError, match=rf"fixed must be True or False, got {type(value).__name__} {value!r}"):
        EOT(JPEG(50), n=2, fixed=value)
    assert EOT(JPEG(50), n=2, fixed=np.bool_(True)).fixed is True


@pytest.mark.parametrize("flag", ["targeted", "random_start"])
def test_pgd_flags_take_booleans_only(flag, classifier):
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    with pytest.raises(TypeError, match=rf"{flag} must be True or False, got str 'no'"):
        pgd(classifier, x, y, 8 / 255, steps=1, **{flag: "no"})


def test_fgsm_targeted_takes_booleans_only(classifier):
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    with pytest.raises(TypeError, match=r"targeted must be True or False, got int 1"):
        fgsm(classifier, x, y, 8 / 255, targeted=1)
    untargeted, targeted = fgsm(classifier, x, y, 8 / 255), fgsm(classifier, x, y, 8 / 255, targeted=True)
    assert not torch.equal(untargeted, targeted)


@pytest.mark.parametrize("generator", ["seed", 5])
def test_diffjpeg_generator_must_be_a_generator(generator):
    expected = rf"generator must be a torch.Generator or None, got {type(generator).__name__}"
    with pytest.raises(TypeError, match=expected):
        DiffJPEG(q=50, rounding="noise", generator=generator)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None"):
        diff_jpeg(torch.rand(1, 3, 8, 8), 50, rounding="noise", generator=generator)
    DiffJPEG(q=50, rounding="noise", generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("key", ["mean", "std"])
def test_named_normalisation_is_refused_with_an_example(key, classifier):
    kwargs = {"mean": (0.5,) * 3, "std": (0.5,) * 3, key: "imagenet"}
    with pytest.raises(TypeError, match=rf"{key} must be a number, a sequence of 1 or 3 numbers .* got str 'imagenet'; "
                                        r"e.g. ImageNet's mean=\(0.485"):
        DefendedModel(classifier, None, **kwargs)


@pytest.mark.parametrize("read", [read_coefficients, decode_file])
@pytest.mark.parametrize("path", [None, 5, ["a.jpg"]])
def test_readers_name_a_path_that_is_not_one(read, path):
    with pytest.raises(TypeError, match=rf"path must be a str or os.PathLike naming a JPEG file, got "
                                        rf"{type(path).__name__}"):
        read(path)


@pytest.fixture
def coefficients(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8")).save(tmp_path / "a.jpg",
                                                                                                quality=80)
    return read_coefficients(tmp_path / "a.jpg")


@pytest.mark.parametrize("path", [None, 5])
def test_write_coefficients_path_must_be_a_path(path, coefficients):
    with pytest.raises(TypeError, match=rf"path must be a str or os.PathLike naming the JPEG file to write, got "
                                        rf"{type(path).__name__} {path!r}"):
        write_coefficients(path, coefficients)


def test_write_coefficients_over_a_folder_names_the_destination(coefficients, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError, match=rf"cannot write '{tmp_path / 'taken'}' \(Is a directory\)") as info:
        write_coefficients(tmp_path / "taken", coefficients)
    assert ".jpg" not in str(info.value.args[1])  # the temporary file is not named
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "taken"]  # and not left behind
